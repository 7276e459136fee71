"""The catalogue: all 68 operations of the seed, the one confirmed as documented, overrides."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from incomaker_elt.contract.catalogue import CatalogueError, load_catalogue
from incomaker_elt.contract.paging import DIALECTS

SEED = Path(__file__).resolve().parents[1] / "docs" / "reference" / "incomaker-reporting-v1.txt"
"""The public Reporting v1 documentation as published (its operation list and the one operation
it documents), kept in the repository so that tests read nothing outside it."""


def _seed_operation_titles() -> list[str]:
    """Operation names as the public documentation lists them (bullets under a group)."""
    text = SEED.read_text(encoding="utf-8")
    listing = text.split("  • Schemas")[0]
    return [m.group(1).strip() for m in re.finditer(r"^    • (.+)$", listing, re.M)]


def test_catalogue_has_one_entry_per_seed_operation() -> None:
    catalogue = load_catalogue()
    seed_titles = _seed_operation_titles()
    assert len(seed_titles) == 68
    assert sorted(op.title for op in catalogue) == sorted(seed_titles)
    assert len(catalogue.groups) == 10


def test_only_the_documented_operation_is_confirmed() -> None:
    catalogue = load_catalogue()
    confirmed = [op for op in catalogue if op.status == "confirmed"]
    assert [op.name for op in confirmed] == ["conversions_totals"]
    totals = confirmed[0]
    assert totals.path == "/conversions/totals"
    assert totals.method == "GET"
    assert totals.params == ("dateFrom", "dateTo", "country", "currency")
    assert catalogue.parameter_types["country"] == "list"
    assert catalogue.parameter_types["dateFrom"] == "date"
    assert set(totals.fields) == {"uniqueContacts", "averageUniqueConversion", "conversions"}
    assert set(totals.nested["conversions"]) == {
        "conversionsAmountWoTax",
        "conversionsAmountWTax",
        "conversionsNumber",
        "currency",
        "averageConversion",
        "breakdown",
    }
    assert "conversionAmountWTaxReference" in totals.nested["conversions.breakdown"]


def test_assumed_lists_page_as_the_vendor_does_and_per_id_operations_have_parents() -> None:
    catalogue = load_catalogue()
    assert catalogue.paging == DIALECTS["offset"]
    for op in catalogue:
        if op.is_paged:
            # Commons v4: ?offset=&limit=, records in a named array beside a `paging` object
            assert op.paging.params(2, 50) == {"offset": "100", "limit": "50"}, op.name
            assert op.records_path not in ("content", "$") and "." not in op.records, op.name
            assert op.paging.total_items == "paging.totalItems", op.name
        if op.path_params:
            assert op.parent is not None and op.parent.into == op.path_params[0], op.name


def test_select_by_name_and_group() -> None:
    catalogue = load_catalogue()
    chosen = catalogue.select(["rfm", "orders"])
    assert {op.group for op in chosen} == {"rfm", "orders"}
    assert len(chosen) == 18
    assert [op.name for op in catalogue.select(["conversions_totals"])] == ["conversions_totals"]
    with pytest.raises(CatalogueError, match="unknown operation or group: nope"):
        catalogue.select(["nope"])


def test_override_file_corrects_an_entry_without_code(tmp_path: Path) -> None:
    override = tmp_path / "real-docs.yaml"
    override.write_text(
        "operations:\n  orders:\n    path: /v1/orders/list\n    status: confirmed\n"
    )
    orders = load_catalogue(override).get("orders")
    assert (orders.path, orders.status) == ("/v1/orders/list", "confirmed")


def test_spring_paging_for_every_entry_is_one_override(tmp_path: Path) -> None:
    override = tmp_path / "spring.yaml"
    override.write_text("defaults:\n  paging: page\n")
    catalogue = load_catalogue(override)
    orders = catalogue.get("orders")
    assert orders.paging.params(1, 100) == {"page": "1", "size": "100"}
    assert orders.records_path == "content"
    assert (
        orders.paging.totals({"content": [], "totalElements": 250, "totalPages": 3}).total_pages
        == 3
    )
    assert not catalogue.get("conversions_totals").is_paged


def test_an_unknown_dialect_is_an_override_not_code(tmp_path: Path) -> None:
    override = tmp_path / "third.yaml"
    override.write_text(
        "operations:\n"
        "  orders:\n"
        "    records: data.items\n"
        "    paging: {style: page, first_page: 1, page_param: p, size_param: per_page,\n"
        "             total_items: meta.count, total_pages: null, next_link: meta.next}\n"
    )
    orders = load_catalogue(override).get("orders")
    assert orders.paging.params(0, 10) == {"p": "1", "per_page": "10"}
    assert orders.records_path == "data.items"
    totals = orders.paging.totals({"meta": {"count": 31, "next": "/orders?p=2"}})
    assert (totals.total_items, totals.total_pages, totals.next_href) == (31, None, "/orders?p=2")
    assert orders.paging.page_count(totals, 10) == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("operations:\n  orders:\n    paging: cursor\n", "unknown paging dialect 'cursor'"),
        ("operations:\n  orders:\n    paging: {style: scroll}\n", "style must be one of"),
        ("operations:\n  orders:\n    paging: {limit: 5}\n", "unknown keys ['limit']"),
        ("- orders\n", "not a list"),
        ("operations: [orders]\n", "`operations` must map operation names"),
        ("operations:\n  orders: {path: /x\n", "is not valid YAML at line"),
        ("operations:\n  orders:\n    api_names: {nope: x}\n", "api_names rename fields"),
        ("operations:\n  no_such_op:\n    path: /x\n", "unknown operation 'no_such_op'"),
        ("operations:\n  orders:\n    status: maybe\n", "status must be one of"),
        ("operations:\n  orders:\n    window: shippedAt\n", "window field 'shippedAt'"),
        ("operations:\n  order_detail:\n    path: /orders/{id}\n", "path placeholders"),
        (
            "operations:\n  rfm_contact_detail:\n    parent: {resource: rfm_cell_contacts, "
            "field: contactId, into: contactId, days_before_today: [recencyDays]}\n",
            "days_before_today only applies with changed_only: true",
        ),
        (
            "operations:\n  rfm_contact_detail:\n    parent: {resource: rfm_cell_contacts, "
            "field: contactId, into: contactId, changed_only: true, days_before_today: [cell]}\n",
            "days_before_today ['cell'] must be integer fields of 'rfm_cell_contacts'",
        ),
    ],
)
def test_bad_override_names_the_entry_and_the_problem(
    tmp_path: Path, override: str, message: str
) -> None:
    path = tmp_path / "override.yaml"
    path.write_text(override)
    with pytest.raises(CatalogueError, match=re.escape(message)):
        load_catalogue(path)


def test_missing_override_file_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="INCOMAKER_CATALOGUE_OVERRIDES"):
        load_catalogue(tmp_path / "absent.yaml")


def test_endpoints_command_prints_json_and_table() -> None:
    cmd = [sys.executable, "-m", "incomaker_elt.cli", "endpoints"]
    rows = json.loads(subprocess.run([*cmd, "--json"], check=True, capture_output=True).stdout)
    assert len(rows) == 68
    assert {"name", "group", "method", "path", "status"} <= set(rows[0])
    assert {r["status"] for r in rows} <= {"confirmed", "inferred", "assumed"}
    table = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    assert "/conversions/totals" in table
    assert "68 operations: 1 confirmed, 67 assumed" in table


def test_every_entry_says_where_each_aspect_comes_from() -> None:
    catalogue = load_catalogue()
    for op in catalogue:
        assert {"paging", "records", "ids", "fields", "path"} <= set(op.evidence), op.name
        assert all(
            v.split(":")[0].split()[0] in ("confirmed", "inferred", "assumed")
            for v in op.evidence.values()
        ), op.name
    totals = catalogue.get("conversions_totals").evidence
    assert totals["path"].startswith("confirmed") and totals["fields"].startswith("confirmed")
    assert catalogue.get("orders").evidence["paging"].startswith("inferred: Commons v4")
