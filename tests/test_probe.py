"""`incomaker-elt probe` against stand-ins that speak other dialects than the catalogue assumes.

The stand-in answers in the dialect of the catalogue it is given; the probe runs with the default
catalogue and must find the differences, write an override that makes ingestion load exact
counts, and report every operation matching when run again with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from api_pages import standin_settings

from incomaker_elt.contract.catalogue import Catalogue, load_catalogue
from incomaker_elt.contract.paging import WHOLE_BODY, dig
from incomaker_elt.contract.settings import Settings
from incomaker_elt.ingestion.client import RetryPolicy
from incomaker_elt.ingestion.pipeline import run_ingestion
from incomaker_elt.ingestion.probe import pair_renames, path_variants, segment_spellings
from incomaker_elt.ingestion.probe_cli import probe_and_report
from incomaker_elt.ingestion.source import RunDates, fixed_params
from incomaker_elt.standin import DEFAULT_TODAY, StandIn

TOKEN = "probe-secret-token-7f3a"
CATALOGUE = load_catalogue()
FAST_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
MOVED = ("campaigns_daily_results", "/campaigns/dailyResults")
RENAMED = ("senders", "email", "senderEmail")
SELECTION = (
    "campaigns_daily_results",
    "senders",
    "order_recommendation",
    "contacts_gender_statistics",
)
"""Operations (not groups) ingested: moved, renamed, UUID orderId, and one the dialect leaves be."""


def spring_dialect() -> dict[str, Any]:
    """Spring paging everywhere, one path moved, one field renamed, orderId a UUID string."""
    operations: dict[str, Any] = {
        MOVED[0]: {"path": MOVED[1]},
        RENAMED[0]: {"api_names": {RENAMED[1]: RENAMED[2]}},
    }
    for op in CATALOGUE:
        if "orderId" in op.fields:
            operations.setdefault(op.name, {})["fields"] = {**op.fields, "orderId": "string"}
    return {"defaults": {"paging": "page"}, "operations": operations}


def catalogue_from(tmp: Path, override: dict[str, Any]) -> Catalogue:
    path = tmp / "dialect.yaml"
    path.write_text(yaml.safe_dump(override))
    return load_catalogue(path)


def settings_for(tmp: Path) -> Settings:
    return standin_settings(tmp, TOKEN)


@dataclasses.dataclass
class Probed:
    status: int
    lines: list[str]
    override: Path

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_probe(
    standin: StandIn,
    tmp: Path,
    catalogue: Catalogue = CATALOGUE,
    only: Sequence[str] = (),
    name: str = "proposed.yaml",
    force: bool = False,
) -> Probed:
    lines: list[str] = []
    status = probe_and_report(
        settings_for(tmp),
        tmp / name,
        force=force,
        only=only,
        transport=standin.transport(),
        today=DEFAULT_TODAY,
        catalogue=catalogue,
        out=lines.append,
    )
    return Probed(status, lines, tmp / name)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe")


@pytest.fixture(scope="module")
def spring(small_world, tmp: Path) -> StandIn:
    return StandIn(small_world, token=TOKEN, catalogue=catalogue_from(tmp, spring_dialect()))


@pytest.fixture(scope="module")
def probed(spring: StandIn, tmp: Path) -> Probed:
    result = run_probe(spring, tmp)
    print("\n" + result.text)  # the table, for `pytest -s`
    return result


def flagged(probed: Probed) -> set[str]:
    rows = [line.split() for line in probed.lines if line and line.split()[0] in names()]
    return {row[0] for row in rows if row[-1] != "ok"}


def names() -> set[str]:
    return {op.name for op in CATALOGUE}


# ----------------------------------------------------------------------------- the probe


def test_every_operation_matches_in_the_default_dialect(small_world, tmp_path: Path) -> None:
    result = run_probe(StandIn(small_world, token=TOKEN), tmp_path)
    assert result.status == 0, result.text
    assert f"{len(CATALOGUE)} of {len(CATALOGUE)} operations match the catalogue." in result.lines
    assert not result.override.exists()


def test_another_dialect_is_found_and_an_override_proposed(probed: Probed) -> None:
    assert probed.status == 1
    proposal = yaml.safe_load(probed.override.read_text())
    assert proposal["defaults"] == {"paging": {"dialect": "page"}}
    changes = proposal["operations"]
    assert changes[MOVED[0]]["path"] == MOVED[1]
    assert changes[RENAMED[0]]["api_names"] == {RENAMED[1]: RENAMED[2]}
    with_order_id = {op.name for op in CATALOGUE if "orderId" in op.fields}
    assert {n for n, c in changes.items() if c.get("fields", {}).get("orderId") == "string"} == (
        with_order_id
    )
    # Exactly what the dialect changed is flagged: paged operations, the moved path, the
    # renamed field and the operations whose orderId is a UUID; nothing else.
    expected = {op.name for op in CATALOGUE if op.is_paged} | with_order_id
    expected |= {MOVED[0], RENAMED[0]}
    assert flagged(probed) == expected
    assert f"{len(CATALOGUE) - len(expected)} of {len(CATALOGUE)} operations match" in probed.text
    assert f"{MOVED[0]}: /campaigns/daily-results answers 404; {MOVED[1]} answers" in probed.text


def test_the_proposed_override_makes_every_operation_match(
    probed: Probed, spring: StandIn, tmp: Path
) -> None:
    again = run_probe(spring, tmp, load_catalogue(probed.override), name="again.yaml")
    assert again.status == 0, again.text
    assert f"{len(CATALOGUE)} of {len(CATALOGUE)} operations match the catalogue." in again.lines


def test_the_token_is_never_shown(probed: Probed) -> None:
    assert TOKEN not in probed.text
    assert TOKEN not in probed.override.read_text()


def test_an_existing_file_is_not_replaced_without_force(spring: StandIn, tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("operations: {}\n")
    kept = run_probe(spring, tmp_path, only=["senders"], name="mine.yaml")
    assert kept.status == 1
    assert kept.override.read_text() == "operations: {}\n"
    replaced = run_probe(spring, tmp_path, only=["senders"], name="mine.yaml", force=True)
    assert yaml.safe_load(replaced.override.read_text())["defaults"]["paging"]["dialect"] == "page"


@pytest.mark.parametrize(
    "dialect, expected",
    [
        # Spring with pages counted from 1
        ({"dialect": "page", "first_page": 1}, {"dialect": "page", "first_page": 1}),
        # offset/limit with the records one level down and only a total of items
        (
            {
                "records": "data.items",
                "total_items": "meta.total",
                "total_pages": None,
                "next_link": None,
                "position_field": None,
                "size_field": None,
            },
            {
                "dialect": "offset",
                "records": "data.items",
                "total_items": "meta.total",
                "total_pages": None,
                "next_link": None,
                "position_field": None,
                "size_field": None,
            },
        ),
    ],
)
def test_other_paging_dialects_are_recognised(
    small_world, tmp_path: Path, dialect: dict[str, Any], expected: dict[str, Any]
) -> None:
    standin = StandIn(
        small_world,
        token=TOKEN,
        catalogue=catalogue_from(tmp_path, {"defaults": {"paging": dialect}}),
    )
    only = ["senders", "segments", "contacts_gender_statistics"]
    result = run_probe(standin, tmp_path, only=only)
    assert result.status == 1, result.text
    proposal = yaml.safe_load(result.override.read_text())
    assert proposal["defaults"]["paging"] == expected
    again = run_probe(standin, tmp_path, load_catalogue(result.override), only, name="again.yaml")
    assert again.status == 0, again.text


# ----------------------------------------------------------------------------- ingestion


def standin_total(standin: StandIn, name: str, start: date) -> int:
    """How many records the stand-in holds for an operation's first-run window, as it says
    (read with the stand-in's own catalogue: its dialect)."""
    op = standin.catalogue.get(name)
    params = {**fixed_params(op, RunDates(start, DEFAULT_TODAY)), **op.paging.params(0, 1)}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = standin.handle("GET", op.url_path(), params.items(), auth)
    assert reply.status == 200, reply.body
    body = orjson.loads(reply.body)
    if op.records_path == WHOLE_BODY:
        return 1
    if op.is_paged:
        return int(dig(body, op.paging.total_items))
    return len(dig(body, op.records_path))


def test_ingesting_with_the_override_loads_exact_counts(
    probed: Probed, spring: StandIn, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    summary = run_ingestion(
        settings,
        only=list(SELECTION),
        end=DEFAULT_TODAY,
        transport=spring.transport(),
        catalogue=load_catalogue(probed.override),
        retry=FAST_RETRY,
    )
    for name in SELECTION:
        expected = standin_total(spring, name, settings.partitions_start)
        assert expected > 0, name
        assert summary.table_rows[name] == expected, name
        assert summary.requests_by_operation[name] >= 1


def test_without_the_override_the_flagged_operations_fail(
    probed: Probed, spring: StandIn, tmp_path: Path
) -> None:
    checked = [MOVED[0], RENAMED[0], "contacts_gender_statistics"]
    failed = set()
    for number, name in enumerate(checked):
        settings = settings_for(tmp_path / str(number))
        try:
            summary = run_ingestion(
                settings,
                only=[name],
                end=DEFAULT_TODAY,
                transport=spring.transport(),
                retry=FAST_RETRY,
            )
        except Exception:  # noqa: BLE001 - whatever the failure, this operation did not load
            failed.add(name)
            continue
        if summary.table_rows.get(name, 0) != standin_total(
            spring, name, settings.partitions_start
        ):
            failed.add(name)
    assert failed == flagged(probed) & set(checked)
    assert failed == {MOVED[0], RENAMED[0]}


# ----------------------------------------------------------------------------- pieces


def test_path_spellings() -> None:
    assert segment_spellings("daily-results") == ["daily-results", "dailyResults", "daily_results"]
    variants = path_variants("/campaigns/daily-results")
    assert "/campaigns/dailyResults" in variants
    assert "/v1/campaigns/daily_results" in variants
    assert "/campaigns/daily-results" not in variants
    assert "/deliveries/smartflows/{smartflowId}/daily" not in path_variants(
        "/deliveries/smartflows/{smartflowId}/daily"
    )
    assert "/v1/deliveries/smartflows/{smartflowId}/daily" in path_variants(
        "/deliveries/smartflows/{smartflowId}/daily"
    )


def test_a_missing_field_and_an_extra_one_of_its_type_are_a_rename() -> None:
    contract = {"email": "string", "createdAt": "timestamp", "senderId": "integer"}
    extra = {"senderEmail": ["a@b.example"], "created": ["2026-01-01T10:00:00+01:00"], "n": [3]}
    assert pair_renames(["email", "createdAt"], extra, contract) == {
        "email": "senderEmail",
        "createdAt": "created",
    }
    assert pair_renames(["senderId"], {"senderEmail": ["a@b.example"]}, contract) == {}


def test_an_operation_catalogued_unpaged_that_pages_is_found(small_world, tmp_path: Path) -> None:
    paged = catalogue_from(tmp_path, {"operations": {"rfm_cube": {"paging": "offset"}}})
    standin = StandIn(small_world, token=TOKEN, catalogue=paged)
    result = run_probe(standin, tmp_path, only=["rfm_cube"])
    assert result.status == 1, result.text
    assert yaml.safe_load(result.override.read_text()) == {
        "operations": {"rfm_cube": {"paging": "default"}}
    }
    again = run_probe(standin, tmp_path, load_catalogue(result.override), ["rfm_cube"], "2.yaml")
    assert again.status == 0, again.text


def test_a_failing_operation_shows_its_status_and_the_servers_message(
    small_world, tmp_path: Path
) -> None:
    moved = catalogue_from(tmp_path, {"operations": {"senders": {"path": "/mail/senders"}}})
    standin = StandIn(small_world, token=TOKEN, catalogue=moved)
    result = run_probe(standin, tmp_path, only=["senders", "segments"])
    assert result.status == 1
    rows = {line.split()[0]: line.split() for line in result.lines if line}
    assert rows["senders"][1] == "404" and rows["senders"][-1] == "failed"
    assert rows["segments"][-1] == "ok"
    assert "  senders: HTTP 404: no operation at /campaigns/senders;" in result.text
    assert not result.override.exists()  # nothing it could propose

    lines: list[str] = []
    probe_and_report(
        settings_for(tmp_path),
        tmp_path / "unused.yaml",
        only=["senders"],
        as_json=True,
        transport=standin.transport(),
        catalogue=CATALOGUE,
        today=DEFAULT_TODAY,
        out=lines.append,
    )
    (finding,) = orjson.loads("\n".join(lines))["operations"]
    assert (finding["operation"], finding["status"], finding["verdict"]) == (
        "senders",
        404,
        "failed",
    )
    assert finding["message"].startswith("no operation at /campaigns/senders")


class DatesIgnored(httpx.BaseTransport):
    """A server that ignores dateFrom/dateTo: the stand-in behind it never sees them."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kept = [(k, v) for k, v in request.url.params.multi_items() if k not in WINDOW]
        url = request.url.copy_with(params=kept)
        return self.inner.handle_request(
            httpx.Request(request.method, url, headers=request.headers)
        )


WINDOW = ("dateFrom", "dateTo")


def test_a_window_the_api_ignores_is_loaded_whole(small_world, tmp_path: Path) -> None:
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)

    def probe(catalogue: Catalogue, name: str) -> tuple[int, list[str]]:
        lines: list[str] = []
        status = probe_and_report(
            settings,
            tmp_path / name,
            only=["dialogs_data"],
            transport=DatesIgnored(standin.transport()),
            today=DEFAULT_TODAY,
            catalogue=catalogue,
            out=lines.append,
        )
        return status, lines

    status, lines = probe(CATALOGUE, "proposed.yaml")
    assert status == 1, "\n".join(lines)
    (row,) = [line.split() for line in lines if line.startswith("dialogs_data ")]
    assert row[4] == "ignored" and row[-1] == "differs"
    change = yaml.safe_load((tmp_path / "proposed.yaml").read_text())["operations"]["dialogs_data"]
    params = [p for p in CATALOGUE.get("dialogs_data").params if p not in WINDOW]
    assert change == {"params": params, "window": None}
    status, lines = probe(load_catalogue(tmp_path / "proposed.yaml"), "again.yaml")
    assert status == 0, "\n".join(lines)
