"""Paging dialects as data: the stand-in answers in the dialect an override file describes, the
pipeline given the same file loads exactly what it loads in the vendor's default dialect.

- Spring's page/size (`defaults: {paging: page}`): ingestion, the marts and the reconciliation
  checks' figures, row for row equal to the default-dialect load;
- a third dialect written only as keys (records at `data.items`, `p`/`per_page` from page 1, no
  totals, a plain `next` href at `meta.next`): the fetcher follows the links and stops at the end;
- a listing with neither totals nor links: it ends on a short page;
- `api_names`: fields the API spells otherwise land in the same raw columns.

Every load is of the small world, for a few operations (and their parents) only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from api_pages import (
    DIALECT_OVERRIDES,
    HEADERS,
    all_records,
    first_records,
    records_of,
    standin_settings,
    total_items,
    write_override,
)

from incomaker_elt.contract.catalogue import Catalogue, load_catalogue
from incomaker_elt.contract.paging import dig, next_href, put
from incomaker_elt.contract.settings import RAW_DATASET, Settings
from incomaker_elt.ingestion.pipeline import LoadSummary, run_ingestion
from incomaker_elt.orchestration import reconciliation as rec
from incomaker_elt.orchestration import transform
from incomaker_elt.standin import DEFAULT_TODAY, StandIn

TOKEN = HEADERS["Authorization"].removeprefix("Bearer ")
START = date(2025, 1, 1)
# The raw tables behind the marts the reconciliation checks read (fct_conversions, delivery_daily,
# rfm_contacts); the pipeline adds the parents of per-id operations.
RECONCILED = [
    "campaigns",
    "campaign_recipient_activity",
    "conversions",
    "deliveries",
    "delivery_recipient_activity",
    "orders",
]
MARTS = ["+fct_conversions", "+delivery_daily", "+rfm_contacts"]
FEW = ["orders", "conversions"]
"""A listing of a few thousand records and a windowed one of a few hundred: tens of pages at
PAGE_SIZE (each operation is its own family, loaded on its own: few keep the tests short)."""
PAGE_SIZE = 100

THIRD_DIALECT = {
    "defaults": {
        "page_size": PAGE_SIZE,
        "paging": {
            "style": "page",
            "page_param": "p",
            "size_param": "per_page",
            "first_page": 1,
            "records": "data.items",
            "total_items": None,
            "total_pages": None,
            "next_link": "meta.next",
            "position_field": "meta.page",
            "size_field": "meta.per_page",
        },
    }
}
NO_TOTALS_NO_LINKS = {
    "defaults": {
        "page_size": PAGE_SIZE,
        "paging": {"total_items": None, "total_pages": None, "next_link": None},
    }
}
RENAMED = {"orders": {"amountWTax": "grossAmount", "createdAt": "placedAt", "orderId": "id"}}


# ----------------------------------------------------------------------------- helpers


def settings_for(folder: Path) -> Settings:
    return standin_settings(folder, TOKEN)


@dataclasses.dataclass
class Load:
    standin: StandIn
    catalogue: Catalogue
    settings: Settings
    summary: LoadSummary


def load(
    small_world,
    folder: Path,
    only: list[str],
    override: dict[str, Any] | None = None,
    transport: Callable[[StandIn], httpx.BaseTransport] | None = None,
) -> Load:
    """The stand-in serving the catalogue an override file gives, ingested with the same file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_override(folder / "overrides.yaml", override) if override else None
    catalogue = load_catalogue(path)
    standin = StandIn(small_world, today=DEFAULT_TODAY, token=TOKEN, catalogue=catalogue)
    settings = settings_for(folder)
    summary = run_ingestion(
        settings,
        only=only,
        start=START,
        end=DEFAULT_TODAY,
        transport=transport(standin) if transport else standin.transport(),
        catalogue=catalogue,
    )
    return Load(standin, catalogue, settings, summary)


def raw_rows(settings: Settings, tables: list[str]) -> dict[str, list[tuple]]:
    """Each raw table's rows without dlt's own columns, sorted: comparable across loads."""
    found = {}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for table in tables:
            columns = sorted(
                name
                for (name,) in con.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema = ? and table_name = ?",
                    [RAW_DATASET, table],
                ).fetchall()
                if not name.startswith("_dlt")
            )
            assert columns, f"no raw table {table}"
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f'select {listed} from {RAW_DATASET}."{table}"').fetchall()
            found[table] = sorted(rows, key=repr)
    return found


def raw_tables(settings: Settings) -> list[str]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return sorted(
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables where table_schema = ?",
                [RAW_DATASET],
            ).fetchall()
            if not name.startswith("_dlt")
        )


def paged_requests(load: Load, name: str) -> list[dict[str, str]]:
    """The parameters of the requests the run sent to a listing (the token check aside: it asks
    for a page of one record)."""
    op = load.catalogue.get(name)
    return [
        r.params
        for r in load.standin.request_log
        if r.path == op.path and r.status == 200 and r.params.get(op.paging.size_param) != "1"
    ]


# ----------------------------------------------------------------------------- loads


@pytest.fixture(scope="module")
def reference(small_world, tmp_path_factory) -> Load:
    """The reconciled operations loaded in the catalogue's own dialect (offset/limit)."""
    return load(small_world, tmp_path_factory.mktemp("offset"), RECONCILED)


@pytest.fixture(scope="module")
def spring(small_world, tmp_path_factory) -> Iterator[Load]:
    """The same operations with the stand-in and the pipeline both on Spring's page/size, by an
    override file only; the marts the reconciliation checks read are built on it."""
    override = DIALECT_OVERRIDES["page"]
    assert override is not None
    loaded = load(small_world, tmp_path_factory.mktemp("page"), RECONCILED, override)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INCOMAKER_WAREHOUSE", str(loaded.settings.warehouse_path))
        transform.build(loaded.settings, select=MARTS, command="run")
    return loaded


def test_spring_dialect_by_override_loads_what_the_default_loads(reference, spring) -> None:
    assert spring.catalogue.get("orders").paging.style == "page"
    assert reference.catalogue.get("orders").paging.style == "offset"
    # the stand-in really answered in Spring's shape, and the pipeline asked in it
    body = orjson.loads(spring.standin.handle("GET", "/orders", [("size", "2")], HEADERS).body)
    assert len(body["content"]) == 2 and body["totalElements"] > 2 and body["number"] == 0
    asked = {k for r in spring.standin.request_log if r.path == "/orders" for k in r.params}
    assert {"page", "size"} <= asked and not {"offset", "limit"} & asked
    tables = raw_tables(reference.settings)
    assert raw_tables(spring.settings) == tables
    assert spring.summary.table_rows == reference.summary.table_rows
    assert sum(reference.summary.table_rows.values()) > 10_000
    assert raw_rows(spring.settings, tables) == raw_rows(reference.settings, tables)


def test_reconciliation_figures_agree_in_the_spring_dialect(spring) -> None:
    """The checks' API side pages in the catalogue's dialect; both sides agree exactly."""

    def get(operation: str, path: str, params: dict[str, str]) -> Any:
        reply = spring.standin.handle("GET", path, list(params.items()), HEADERS)
        assert reply.status == 200, (operation, reply.body[:300])
        return json.loads(reply.body, parse_float=Decimal)  # money as the checks read it

    catalogue = spring.catalogue
    with duckdb.connect(str(spring.settings.warehouse_path), read_only=True) as con:
        first, last = date(2026, 1, 1), date(2026, 6, 30)
        ours = rec.warehouse_conversion_totals(con, first, last)
        assert (
            ours
            and rec.compare(
                ours, rec.api_conversion_totals(get, first, last), rec.CONVERSION_FIGURES
            )
            == []
        )
        ours = rec.warehouse_delivery_daily(con, first, last)
        theirs = rec.api_delivery_daily(get, catalogue, first, last)
        assert len(theirs) > 20 and rec.compare(ours, theirs, rec.DELIVERY_FIGURES) == []
        window_start, analysis_date, cells = rec.warehouse_rfm_cells(con)
    assert analysis_date == DEFAULT_TODAY
    theirs = rec.api_rfm_cells(get, catalogue, window_start, analysis_date)
    assert cells and rec.compare(cells, theirs, ("contacts",)) == []


# ----------------------------------------------------------------------------- a third dialect


class NextAsHref(httpx.BaseTransport):
    """The stand-in, with its `next` link written as a plain href string (or null on the last
    page) where the dialect's `next_link` path is: a server unlike both built-in dialects."""

    def __init__(self, standin: StandIn, link_path: str) -> None:
        self.inner = standin.transport()
        self.link_path = link_path

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        content = response.read()
        if response.status_code != 200:
            return httpx.Response(response.status_code, headers=response.headers, content=content)
        body = orjson.loads(content)
        links = dig(body, self.link_path) if isinstance(body, dict) else None
        if isinstance(links, list):
            put(body, self.link_path, next_href(links))
            content = orjson.dumps(body)
        return httpx.Response(200, headers={"content-type": "application/json"}, content=content)


def reference_counts(small_world, names: list[str]) -> dict[str, int]:
    """What each listing holds, read from a default-dialect stand-in, not by the pipeline."""
    standin = StandIn(small_world, today=DEFAULT_TODAY, token=TOKEN)
    window = {"dateFrom": START.isoformat(), "dateTo": DEFAULT_TODAY.isoformat()}
    counts = {}
    for name in names:
        op = standin.catalogue.get(name)
        params = window if op.window else {}
        counts[name] = total_items(standin, op, **params)
    return counts


def test_a_third_dialect_by_keys_follows_next_links_to_the_end(small_world, tmp_path) -> None:
    catalogue = load_catalogue(write_override(tmp_path / "third.yaml", THIRD_DIALECT))
    standin = StandIn(small_world, today=DEFAULT_TODAY, token=TOKEN, catalogue=catalogue)
    orders = catalogue.get("orders")
    # the stand-in serves it: records at data.items, no totals, a next href, pages from 1
    transport = NextAsHref(standin, "meta.next")
    with httpx.Client(transport=transport, base_url="http://standin", headers=HEADERS) as api:
        body = api.get("/orders", params={"p": 1, "per_page": 3}).json()
        assert len(body["data"]["items"]) == 3 and body["meta"]["page"] == 1
        assert body["meta"]["next"] == "?p=2&per_page=3" and "paging" not in body
        assert orders.paging.totals(body).total_items is None
        assert (
            len(all_records(api, orders, 250))
            == reference_counts(small_world, ["orders"])["orders"]
        )
    loaded = load(
        small_world, tmp_path / "run", FEW, THIRD_DIALECT, lambda s: NextAsHref(s, "meta.next")
    )
    expected = reference_counts(small_world, FEW)
    assert {name: loaded.summary.table_rows[name] for name in FEW} == expected
    for name in FEW:
        asked = paged_requests(loaded, name)
        pages = [int(params["p"]) for params in asked]
        # each page once, from 1, and not one request past the last page
        assert sorted(pages) == list(range(1, math.ceil(expected[name] / PAGE_SIZE) + 1)), name
        assert all(params["per_page"] == str(PAGE_SIZE) for params in asked)


def test_without_totals_or_links_a_short_page_ends_the_listing(small_world, tmp_path) -> None:
    loaded = load(small_world, tmp_path, FEW, NO_TOTALS_NO_LINKS)
    expected = reference_counts(small_world, FEW)
    assert {name: loaded.summary.table_rows[name] for name in FEW} == expected
    for name in FEW:
        offsets = sorted(int(p["offset"]) for p in paged_requests(loaded, name))
        # full pages, then the short one (an empty one when the count is a whole number of pages)
        assert offsets == list(range(0, expected[name] + 1, PAGE_SIZE)), name
    op = loaded.catalogue.get("orders")  # the stand-in served no totals and no links
    body = orjson.loads(loaded.standin.handle("GET", "/orders", [("limit", "5")], HEADERS).body)
    assert op.paging.totals(body) == op.paging.totals({}) and len(records_of(op, body)) == 5


# ----------------------------------------------------------------------------- renamed fields


def test_renamed_fields_land_in_the_same_raw_columns(small_world, reference, tmp_path) -> None:
    override = {"operations": {name: {"api_names": names} for name, names in RENAMED.items()}}
    tables = list(RENAMED)
    loaded = load(small_world, tmp_path, tables, override)
    for name, names in RENAMED.items():
        record = first_records(loaded.standin, loaded.catalogue.get(name), 1)[0]
        assert set(names.values()) <= set(record) and not set(names) & set(record), name
    assert raw_rows(loaded.settings, tables) == raw_rows(reference.settings, tables)
