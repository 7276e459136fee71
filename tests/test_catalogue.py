"""The catalogue: all 68 operations of the seed, the one confirmed as documented, overrides."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion.catalogue import CatalogueError, load_catalogue

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "incomaker-reporting-v1.txt"


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


def test_assumed_lists_page_spring_style_and_per_id_operations_have_parents() -> None:
    for op in load_catalogue():
        if op.is_paged:
            assert op.records == "content", op.name
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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("operations:\n  no_such_op:\n    path: /x\n", "unknown operation 'no_such_op'"),
        ("operations:\n  orders:\n    status: maybe\n", "status must be one of"),
        ("operations:\n  orders:\n    window: shippedAt\n", "window field 'shippedAt'"),
        ("operations:\n  order_detail:\n    path: /orders/{id}\n", "path placeholders"),
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
    assert {r["status"] for r in rows} == {"confirmed", "assumed"}
    table = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    assert "/conversions/totals" in table
    assert "68 operations: 1 confirmed, 67 assumed" in table
