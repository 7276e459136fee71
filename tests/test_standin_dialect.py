"""The stand-in speaks the dialect its catalogue describes: ids, timestamps, names, paging."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from incomaker_elt.contract.catalogue import load_catalogue
from incomaker_elt.standin.dialect import integer_id, to_uuid
from incomaker_elt.standin.service import StandIn

AUTH = {"Authorization": "Bearer standin-token"}


def _get(standin: StandIn, path: str, query: list[tuple[str, str]]) -> dict:
    reply = standin.handle("GET", path, query, AUTH)
    assert reply.status == 200, reply.body
    return orjson.loads(reply.body)


@pytest.fixture(scope="module")
def vendor() -> StandIn:
    return StandIn()


def test_campaign_ids_are_uuids_that_lead_back_to_the_campaign(vendor: StandIn) -> None:
    campaign = _get(vendor, "/campaigns", [("limit", "1")])["campaigns"][0]
    uuid = campaign["campaignId"]
    assert integer_id("campaignId", uuid) == 1 and uuid == to_uuid("campaignId", 1)
    recipients = _get(vendor, f"/campaigns/{uuid}/recipients", [("limit", "5")])["recipients"]
    assert recipients and {r["campaignId"] for r in recipients} == {uuid}
    # the same campaign through a comma list of ids
    results = _get(vendor, "/campaigns/daily-results", [("campaignId", uuid), ("limit", "1000")])
    assert {r["campaignId"] for r in results["dailyResults"]} == {uuid}


def test_timestamps_carry_the_offset_of_the_catalogue_zone(vendor: StandIn, tmp_path: Path) -> None:
    zoned = _get(vendor, "/orders", [("limit", "3")])["orders"]
    override = tmp_path / "utc.yaml"
    override.write_text("defaults:\n  timestamp_zone: UTC\n")
    utc = _get(StandIn(catalogue=load_catalogue(override)), "/orders", [("limit", "3")])["orders"]
    for local, plain in zip(zoned, utc, strict=True):
        assert local["createdAt"][-6:] in ("+01:00", "+02:00") and plain["createdAt"].endswith("Z")
        instant = datetime.fromisoformat(local["createdAt"]).astimezone(UTC)
        assert instant == datetime.fromisoformat(plain["createdAt"].replace("Z", "+00:00"))


def test_renamed_fields_and_spring_paging_by_override(tmp_path: Path) -> None:
    override = tmp_path / "spring.yaml"
    override.write_text(
        "defaults:\n  paging: page\n"
        "operations:\n  orders:\n    api_names: {orderId: id}\n    fields: {orderId: string,"
        " contactId: integer, createdAt: timestamp, country: string, currency: string,"
        " amountWoTax: decimal, amountWTax: decimal, amountWoTaxReference: decimal,"
        " amountWTaxReference: decimal, itemsCount: integer}\n"
    )
    spring = StandIn(catalogue=load_catalogue(override))
    body = _get(spring, "/orders", [("page", "1"), ("size", "2")])
    assert body["number"] == 1 and body["size"] == 2 and body["totalElements"] > 2
    first = body["content"][0]
    assert "orderId" not in first and integer_id("orderId", first["id"]) == 3


def test_simulate_names_a_broken_dialect_file_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "dialect.yaml"
    broken.write_text("defaults:\n  paging: cursor\n")
    cmd = [sys.executable, "-m", "incomaker_elt.cli", "simulate", "--check", "--port", "0"]
    done = subprocess.run(
        [*cmd, "--catalogue", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown paging dialect 'cursor'" in lines[0], done.stderr


def test_an_api_that_moved_or_reshaped_some_lists_fails_only_those(tmp_path: Path) -> None:
    """The token check asks `senders` for one record; a moved `senders` or lists paged another
    way must not stop the operations the catalogue describes right."""
    from api_pages import standin_settings

    from incomaker_elt.ingestion.client import RetryPolicy
    from incomaker_elt.ingestion.pipeline import IngestionIncomplete, run_ingestion
    from incomaker_elt.standin import DEFAULT_TODAY

    dialect = tmp_path / "dialect.yaml"
    dialect.write_text(
        "operations:\n  senders: {path: /campaign-senders}\n  segments: {paging: page}\n"
    )
    served = StandIn(catalogue=load_catalogue(dialect), today=DEFAULT_TODAY)
    settings = standin_settings(tmp_path, "standin-token")
    with pytest.raises(IngestionIncomplete) as failure:
        run_ingestion(
            settings,
            only=["senders", "segments", "products"],
            end=DEFAULT_TODAY,
            transport=served.transport(),
            retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02),
        )
    summary = failure.value.summary
    failed = {name for f in summary.failures for name in f.operations}
    assert failed == {"senders", "segments"}
    assert "HTTP 404" in str(failure.value) and "no 'segments'" in str(failure.value)
    products = _get(served, "/products", [("limit", "1")])["paging"]["totalItems"]
    assert summary.table_rows["products"] == products


def test_a_reference_shows_the_uuid_of_what_it_refers_to() -> None:
    assert to_uuid("recoveredOrderId", 5) == to_uuid("orderId", 5)
    assert to_uuid("duplicateOfContactId", 7) == to_uuid("contactId", 7)
    assert to_uuid("orderId", 5) != to_uuid("contactId", 5)
    assert integer_id("orderId", to_uuid("recoveredOrderId", 42)) == 42
