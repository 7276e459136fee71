"""Ingestion against the stand-in: exact counts, idempotent re-runs, incremental windows, faults,
a rejected token, schema drift and a run that dies half-way.

The full-catalogue runs use a one-month first window (June 2026) to stay fast: the code path is the
same as for the whole history, and the counts are checked against what the stand-in serves.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from api_pages import first_page, records_of, total_items

from incomaker_elt.contract.catalogue import Operation, default_catalogue
from incomaker_elt.contract.columns import snake
from incomaker_elt.contract.settings import RAW_DATASET, Settings, load_settings
from incomaker_elt.ingestion import pipeline as ingestion_pipeline
from incomaker_elt.ingestion.client import IngestionError, RetryPolicy
from incomaker_elt.ingestion.pipeline import run_ingestion
from incomaker_elt.standin import DEFAULT_TODAY, Faults, StandIn

CATALOGUE = default_catalogue()
TOKEN = "standin-token"
JUNE = date(2026, 6, 1)
FAST_RETRY = RetryPolicy(max_attempts=10, backoff_base=0.01, backoff_cap=0.05)
# Later runs skip the RFM group: the stand-in computes each RFM answer afresh (tens of ms each, one
# per cell and per changed contact), and the first run already covers it.
BUT_RFM = [group for group in CATALOGUE.groups if group != "rfm"]


# ------------------------------------------------------------------ helpers


def settings_for(tmp: Path, **changes: Any) -> Settings:
    base = dataclasses.replace(
        load_settings(),
        warehouse_path=tmp / "warehouse" / "incomaker.duckdb",
        base_url=None,
        api_token=TOKEN,
        dlt_destination=None,
        requests_per_second=None,  # the stand-in in process: no cap
    )
    return dataclasses.replace(base, **changes)


class Tap(httpx.BaseTransport):
    """Passes requests on and keeps every 200 body, to count what the stand-in served.
    `before(n)` runs before the n-th request: a test makes it raise to kill the run."""

    def __init__(
        self, inner: httpx.BaseTransport, before: Callable[[int], None] | None = None
    ) -> None:
        self.inner = inner
        self.before = before
        self.bodies: list[tuple[str, dict[str, str], bytes]] = []
        self.count = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.count += 1
            number = self.count
        if self.before:
            self.before(number)
        response = self.inner.handle_request(request)
        body = response.read()
        if response.status_code == 200:
            with self._lock:
                self.bodies.append((request.url.path, dict(request.url.params), body))
        return response


def _route_table() -> list[tuple[re.Pattern[str], Operation]]:
    routes = [
        (re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"[^/]+", re.escape(op.path)) + "$"), op)
        for op in CATALOGUE
    ]
    routes.sort(key=lambda r: (len(r[1].path_params), -len(r[1].path)))
    return routes


ROUTES = _route_table()


def route(path: str) -> Operation:
    return next(op for pattern, op in ROUTES if pattern.match(path))


def is_token_check(op: Operation, params: dict[str, str]) -> bool:
    """The one-record request the pipeline sends before a run to check the token."""
    return op.is_paged and params.get(op.paging.size_param) == "1"


def asked_params(op: Operation, params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A request's parameters without the paging ones (of the operation's dialect)."""
    return tuple(sorted((k, v) for k, v in params.items() if k not in op.paging.query_params))


def page_index(op: Operation, params: dict[str, str]) -> int:
    """Which page (from 0) a request asked for, in the operation's dialect."""
    paging = op.paging
    if paging.style == "offset":
        return int(params.get(paging.offset_param, 0)) // int(params[paging.size_param])
    return int(params.get(paging.page_param, paging.first_page)) - paging.first_page


def query(con: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> list[tuple]:
    return con.execute(sql, list(params)).fetchall()


def table_counts(settings: Settings) -> dict[str, int]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        tables = query(
            con,
            "select table_name from information_schema.tables where table_schema = ?",
            RAW_DATASET,
        )
        return {
            t: query(con, f'select count(*) from {RAW_DATASET}."{t}"')[0][0]
            for (t,) in tables
            if not t.startswith("_dlt")
        }


def duplicate_keys(settings: Settings) -> dict[str, int]:
    """Tables where a merge key repeats, with the number of surplus rows."""
    found = {}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for op in CATALOGUE:
            keys = [snake(k) for k in op.primary_key]
            if op.kind == "aggregate":
                keys = ["_snapshot_date", "_params", *keys]
            try:
                total, distinct = query(
                    con,
                    f"select count(*), count(distinct ({', '.join(keys)})) "
                    f'from {RAW_DATASET}."{op.name}"',
                )[0]
            except duckdb.CatalogException:
                continue
            if total != distinct:
                found[op.name] = total - distinct
    return found


def _count_lists(record: Any, op: Operation, path: str, counts: Counter) -> None:
    fields = op.fields if not path else op.nested.get(path, {})
    for field, kind in fields.items():
        value = record.get(field) if isinstance(record, dict) else None
        where = f"{path}.{field}" if path else field
        if kind == "list" and isinstance(value, list):
            counts[f"{op.name}__" + "__".join(snake(p) for p in where.split("."))] += len(value)
            for item in value:
                _count_lists(item, op, where, counts)
        elif kind == "object" and isinstance(value, dict):
            _count_lists(value, op, where, counts)


def served_counts(tap: Tap) -> Counter:
    """Records (distinct by merge key) and nested list items in the bodies the stand-in served.
    A record served again (a later run) counts once, with the nested items of its last answer."""
    keys: dict[str, set] = defaultdict(set)
    nested: dict[tuple, Counter] = {}
    for path, params, body in tap.bodies:
        op = route(path)
        if is_token_check(op, params):
            continue  # the token check before the run: one record, not loaded
        records = records_of(op, orjson.loads(body))
        asked = asked_params(op, params)
        for record in records:
            key = tuple(record.get(k) for k in op.primary_key)
            identity = (path, asked, key) if op.kind == "aggregate" else key
            keys[op.name].add(identity)
            items: Counter = Counter()
            _count_lists(record, op, "", items)
            nested[(op.name, identity)] = items
    return Counter({name: len(found) for name, found in keys.items()}) + sum(
        nested.values(), Counter()
    )


def api_total(standin: StandIn, op: Operation, path: str, params: dict[str, str]) -> int:
    """What the stand-in says a listing holds, asked independently of the pipeline."""
    return total_items(standin, op, path, **params)


def window_max(settings: Settings, op: Operation) -> Any:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return query(con, f'select max({snake(op.window)}) from {RAW_DATASET}."{op.name}"')[0][0]


# ------------------------------------------------------------------ one account, many runs


@pytest.fixture(scope="module")
def account(small_world, tmp_path_factory):
    """The stand-in at its default today, ingested once with the whole catalogue."""
    standin = StandIn(small_world, today=DEFAULT_TODAY, token=TOKEN)
    settings = settings_for(tmp_path_factory.mktemp("account"))
    tap = Tap(standin.transport())
    summary = run_ingestion(settings, start=JUNE, end=DEFAULT_TODAY, transport=tap)
    return standin, settings, tap, summary


def test_first_run_loads_exactly_what_the_api_serves(account):
    standin, settings, tap, summary = account
    counts = table_counts(settings)
    # One raw table per operation, plus the child tables of nested lists.
    assert {op.name for op in CATALOGUE} <= set(counts)
    served = served_counts(tap)
    mismatched = {t: (counts.get(t), n) for t, n in served.items() if counts.get(t) != n}
    assert not mismatched, f"table: (rows, served) {mismatched}"
    assert summary.rows_loaded == {t: n for t, n in counts.items() if n}


def test_every_listing_was_asked_whole(account):
    """Top-level listings hold what the API says when asked again; every page was fetched; every
    per-id operation was asked for every parent id of the run."""
    standin, settings, tap, _ = account
    asked: dict[str, set] = defaultdict(set)
    pages: dict[tuple, set] = defaultdict(set)
    for record in standin.request_log:
        op = route(record.path)
        if record.status != 200 or is_token_check(op, record.params):
            continue
        params = asked_params(op, record.params)
        asked[op.name].add((record.path, params))
        if op.is_paged:
            pages[(record.path, params)].add(page_index(op, record.params))
    counts = table_counts(settings)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for op in CATALOGUE:
            if op.parent is None:
                [(path, params)] = asked[op.name]
                expected = api_total(standin, op, path, dict(params))
                assert counts[op.name] == expected, op.name
                if op.is_paged:
                    total_pages = max(1, -(-expected // CATALOGUE.page_size))
                    assert pages[(path, params)] == set(range(total_pages)), op.name
                continue
            parent = CATALOGUE.get(op.parent.resource)
            values = {
                str(v)
                for (v,) in query(
                    con,
                    f"select distinct {snake(op.parent.field)} from {RAW_DATASET}.{parent.name} "
                    f"where {snake(op.parent.field)} is not null",
                )
            }
            requested: set[str] = set()
            for path, params in asked[op.name]:
                if op.parent.into in op.path_params:
                    requested.add(
                        path.rstrip("/").split("/")[
                            op.path.split("/").index("{" + op.parent.into + "}")
                        ]
                    )
                else:
                    requested.update(dict(params)[op.parent.into].split(","))
            assert requested == values, op.name


def test_aggregates_carry_snapshot_date_and_parameters(account):
    _, settings, _, _ = account
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        snapshot, params = query(
            con,
            f"select distinct _snapshot_date, _params from {RAW_DATASET}.conversions_totals",
        )[0]
        breakdown = query(
            con,
            f"select count(*) from {RAW_DATASET}.conversions_totals__conversions__breakdown b "
            f"join {RAW_DATASET}.conversions_totals t on b._dlt_parent_id = t._dlt_id",
        )[0][0]
        columns = {r[0]: r[1] for r in query(con, f"describe {RAW_DATASET}.orders")}
    assert snapshot == DEFAULT_TODAY
    assert orjson.loads(params) == {"dateFrom": "2026-06-01", "dateTo": "2026-06-30"}
    assert breakdown > 0
    assert columns["amount_w_tax"].startswith("DECIMAL")
    assert columns["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert columns["order_id"] == "BIGINT"
    assert {"_dlt_id", "_dlt_load_id"} <= set(columns)


def test_a_second_run_adds_no_duplicate(account):
    standin, settings, _, _ = account
    before = table_counts(settings)
    run_ingestion(
        settings, only=BUT_RFM, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport()
    )
    assert table_counts(settings) == before
    assert duplicate_keys(settings) == {}


def test_next_day_asks_only_for_the_new_window_plus_lookback(account):
    standin, settings, _, _ = account
    windowed = [op for op in CATALOGUE.select(BUT_RFM) if op.window]
    last_seen = {op.name: window_max(settings, op) for op in windowed}
    contacts_before = table_counts(settings)["contacts"]
    next_day = DEFAULT_TODAY + timedelta(days=1)
    standin.set_today(next_day)
    standin.clear_log()
    try:
        run_ingestion(
            settings, only=BUT_RFM, start=JUNE, end=next_day, transport=standin.transport()
        )
    finally:
        standin.set_today(DEFAULT_TODAY)
    log = standin.request_log.snapshot()
    for op in windowed:
        seen = last_seen[op.name]
        if seen is None:
            continue
        if isinstance(seen, datetime):
            seen = seen - timedelta(days=op.lookback_days)
            expected_from = seen.date()
        else:
            expected_from = seen - timedelta(days=op.lookback_days)
        expected = {("dateFrom", str(max(expected_from, JUNE))), ("dateTo", str(next_day))}
        windows = {
            (("dateFrom", r.params.get("dateFrom")), ("dateTo", r.params.get("dateTo")))
            for r in log
            if route(r.path) is op and not is_token_check(op, r.params)
        }
        assert windows == {tuple(sorted(expected))}, op.name
    # Contact details only for the contacts of the new window, never the whole account.
    detailed = [
        contact
        for r in log
        if route(r.path).name == "contacts_details"
        for contact in r.params["ids"].split(",")
    ]
    assert 0 < len(detailed) < contacts_before / 5
    assert duplicate_keys(settings) == {}


def test_details_of_unchanged_parents_listed_whole_are_not_asked_again(small_world, tmp_path):
    """A parent listed whole every run (products) has its detail asked for only when its record
    changed: a second run over an unchanged account asks for no product's detail. (The
    fingerprint once took in the `_dlt_id` drawn for each row, so every record looked changed.)"""
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)
    asked = []
    for _ in range(2):
        summary = run_ingestion(
            settings,
            only=["products", "product_detail"],
            start=JUNE,
            end=DEFAULT_TODAY,
            transport=standin.transport(),
        )
        asked.append(summary.requests_by_operation.get("product_detail", 0))
    products = table_counts(settings)["products"]
    assert asked == [products, 0]
    assert table_counts(settings)["product_detail"] == products


class OneOrderChanged(httpx.BaseTransport):
    """The stand-in, except that the orders listing says another country for one order."""

    def __init__(self, inner: httpx.BaseTransport, order_id: int) -> None:
        self.inner, self.order_id = inner, order_id

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        orders = CATALOGUE.get("orders")
        if not request.url.path.endswith(orders.path) or response.status_code != 200:
            return response
        body = orjson.loads(response.read())
        for record in records_of(orders, body):
            if record["orderId"] == self.order_id:
                record["country"] = "XX"
        return httpx.Response(200, content=orjson.dumps(body), headers=response.headers)


def test_a_range_read_again_asks_details_only_for_the_orders_that_changed(small_world, tmp_path):
    """The nightly run reads the last month again; an order whose record is as it was is not
    asked for its detail again, one whose record changed is, and orders older than the memory
    (incomaker_elt.ingestion.source.REMEMBERED_DAYS) are asked for as before."""
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)
    month = JUNE + timedelta(days=10)  # a range within what the first load read

    def load(start: date, transport: httpx.BaseTransport) -> dict[str, int]:
        summary = run_ingestion(
            settings,
            only=["orders", "order_detail"],
            start=start,
            end=DEFAULT_TODAY,
            transport=transport,
            fixed_window=True,
        )
        assert summary.failures == []
        return summary.requests_by_operation

    first = load(JUNE, standin.transport())
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        (order_id,), *_ = con.execute(
            f"select order_id from {RAW_DATASET}.orders where created_at >= ? order by 1",
            [month],
        ).fetchall()
    assert load(month, standin.transport()).get("order_detail", 0) == 0
    standin.clear_log()
    again = load(month, OneOrderChanged(standin.transport(), order_id))
    assert again["order_detail"] == 1
    (asked,) = [r for r in standin.request_log.snapshot() if route(r.path).name == "order_detail"]
    assert asked.path.endswith(f"/{order_id}")
    assert first["order_detail"] == table_counts(settings)["order_detail"]


def test_a_day_later_the_rfm_detail_is_asked_only_for_contacts_whose_rfm_changed(
    small_world, tmp_path
):
    """A day on, every scored contact's recency is a day longer; the detail is asked for again
    only for a contact whose cell, frequency, monetary or last order day (today - recencyDays:
    `days_before_today` in the catalogue) changed, or who is newly scored."""
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)

    def load(today: date) -> tuple[int, dict[int, tuple], set[int]]:
        standin.set_today(today)
        summary = run_ingestion(
            settings,
            only=["rfm_cells", "rfm_cell_contacts", "rfm_contact_detail"],
            start=date(2025, 1, 1),
            end=today,
            transport=standin.transport(),
        )
        assert summary.failures == []
        latest = "_dlt_load_id = (select max(_dlt_load_id) from {0})"
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            table = f"{RAW_DATASET}.rfm_cell_contacts"
            listed = {
                contact: (cell, frequency, monetary, today - timedelta(days=recency))
                for contact, cell, recency, frequency, monetary in con.execute(
                    "select contact_id, cell, recency_days, frequency, monetary "
                    f"from {table} where {latest.format(table)}"
                ).fetchall()
            }
            table = f"{RAW_DATASET}.rfm_contact_detail"
            detailed = {
                contact
                for (contact,) in con.execute(
                    f"select contact_id from {table} where {latest.format(table)}"
                ).fetchall()
            }
        return summary.requests_by_operation.get("rfm_contact_detail", 0), listed, detailed

    asked, before, detailed = load(DEFAULT_TODAY)
    assert asked == len(before) == len(detailed) > 100
    asked, after, detailed = load(DEFAULT_TODAY + timedelta(days=1))
    changed = {contact for contact, rfm in after.items() if before.get(contact) != rfm}
    assert detailed == changed and asked == len(changed)
    assert 0 < len(changed) < len(after) / 2, (len(changed), len(after))


# ------------------------------------------------------------------ conversions arrive late


def _conversion_ids(standin: StandIn, today: date) -> dict[int, str]:
    standin.set_today(today)
    op = CATALOGUE.get("conversions")
    body = first_page(standin, op, 1000, dateFrom="2026-03-01")
    assert (op.paging.page_count(op.paging.totals(body), 1000) or 1) <= 1
    return {c["conversionId"]: c["date"] for c in records_of(op, body)}


def test_a_late_conversion_is_picked_up_the_next_day(small_world, tmp_path):
    standin = StandIn(small_world, token=TOKEN)
    # A day after which the API shows a conversion dated before it: recorded late.
    day = DEFAULT_TODAY
    while True:
        now, tomorrow = (
            _conversion_ids(standin, day),
            _conversion_ids(standin, day + timedelta(days=1)),
        )
        late = {cid for cid, d in tomorrow.items() if cid not in now and d <= str(day)}
        if late:
            break
        day += timedelta(days=1)
    settings = settings_for(tmp_path)
    start = date(2026, 3, 1)
    standin.set_today(day)
    run_ingestion(
        settings, only=["conversions"], start=start, end=day, transport=standin.transport()
    )
    standin.set_today(day + timedelta(days=1))
    standin.clear_log()
    run_ingestion(
        settings,
        only=["conversions"],
        start=start,
        end=day + timedelta(days=1),
        transport=standin.transport(),
    )
    [window] = {
        (r.params["dateFrom"], r.params["dateTo"])
        for r in standin.request_log
        if route(r.path).name == "conversions"
    }
    assert window == (str(day - timedelta(days=30)), str(day + timedelta(days=1)))
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        loaded = {r[0] for r in query(con, f"select conversion_id from {RAW_DATASET}.conversions")}
    assert late <= loaded
    assert loaded == set(tomorrow)


# ------------------------------------------------------------------ failures

SUBSET = ["campaigns", "conversions", "contacts_details", "conversions_totals", "orders"]


def _exact(settings: Settings, tap: Tap) -> None:
    counts = table_counts(settings)
    served = served_counts(tap)
    assert {t: counts.get(t) for t in served} == dict(served)
    assert duplicate_keys(settings) == {}


def test_faults_at_a_fifth_of_requests_still_end_exact(small_world, tmp_path):
    faults = Faults(rate=0.2, kinds=("429", "500", "502", "503", "truncate"), retry_after=0, seed=7)
    standin = StandIn(small_world, token=TOKEN, faults=faults)
    settings = settings_for(tmp_path)
    tap = Tap(standin.transport())
    summary = run_ingestion(
        settings, only=SUBSET, start=JUNE, end=DEFAULT_TODAY, transport=tap, retry=FAST_RETRY
    )
    failed = Counter(r.status for r in standin.request_log if r.status != 200)
    assert {429, 500, 502, 503} <= set(failed), failed
    assert summary.retries >= sum(failed.values())
    # Truncated bodies are 200s that do not parse: the tap kept them, the pipeline did not.
    complete = [b for b in tap.bodies if _parses(b[2])]
    assert len(complete) < len(tap.bodies), "some bodies were truncated"
    tap.bodies = complete
    _exact(settings, tap)


def _parses(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def test_a_wrong_token_fails_fast_writes_nothing_and_is_never_shown(
    small_world, tmp_path, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-7f3a9c"
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path, api_token=wrong)
    started = time.monotonic()
    with pytest.raises(IngestionError) as failure:
        run_ingestion(settings, end=DEFAULT_TODAY, transport=standin.transport())
    assert time.monotonic() - started < 5
    message = str(failure.value)
    assert "rejected the token" in message and "INCOMAKER_API_TOKEN" in message
    out = capsys.readouterr()
    for text in (message, out.out, out.err, caplog.text):
        assert wrong not in text
    assert not settings.warehouse_dir.exists() or not any(settings.warehouse_dir.iterdir())


def test_schema_drift_adds_a_column(small_world, tmp_path):
    standin = StandIn(small_world, token=TOKEN, faults=Faults(drift=True))
    settings = settings_for(tmp_path)
    tap = Tap(standin.transport())
    run_ingestion(settings, only=SUBSET, start=JUNE, end=DEFAULT_TODAY, transport=tap)
    _exact(settings, tap)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for table in ("campaigns", "conversions", "order_detail"):
            tiers = query(con, f"select count(loyalty_tier), count(*) from {RAW_DATASET}.{table}")[
                0
            ]
            assert tiers[0] == tiers[1] > 0, table


class Killed(Exception):
    """Stands for the process dying: not an HTTP error, so nothing retries it."""


def test_a_run_killed_half_way_then_run_again_ends_exact(small_world, tmp_path):
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)

    def die_at_40(number: int) -> None:
        if number == 40:
            raise Killed("killed")

    killed = Tap(standin.transport(), before=die_at_40)
    with pytest.raises(IngestionError):
        run_ingestion(settings, only=SUBSET, start=JUNE, end=DEFAULT_TODAY, transport=killed)
    tap = Tap(standin.transport())
    run_ingestion(settings, only=SUBSET, start=JUNE, end=DEFAULT_TODAY, transport=tap)
    # Families the first run finished stay loaded and the second run asks only for what is new
    # since; the one it was killed in is fetched again whole. The warehouse holds exactly what
    # the two runs were served, each record once.
    tap.bodies = killed.bodies + tap.bodies
    _exact(settings, tap)


def test_an_operation_without_records_still_gets_its_typed_table(small_world, tmp_path):
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)
    first_day = date(2025, 1, 1)
    run_ingestion(
        settings,
        only=["campaign_ab_tests", "conversions", "conversions_history"],
        start=first_day,
        end=first_day,
        transport=standin.transport(),
    )
    counts = table_counts(settings)
    assert counts["campaign_ab_tests"] == counts["conversions"] == 0
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        columns = {r[0]: r[1] for r in query(con, f"describe {RAW_DATASET}.conversions")}
    assert columns["date"] == "DATE" and columns["conversion_amount_w_tax"].startswith("DECIMAL")


def test_the_warehouse_keeps_only_the_newest_states_and_runs_go_on_from_them(
    small_world, tmp_path, monkeypatch
):
    """dlt stores its whole state (cursors, the parents' fingerprints) with every load that
    changed it and never removes one: each run keeps the newest STATES_KEPT of completed loads,
    and a run without its local state (a new machine) still continues from the newest."""
    monkeypatch.setattr(ingestion_pipeline, "STATES_KEPT", 2)
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)
    start = date(2026, 5, 1)
    for day in (DEFAULT_TODAY + timedelta(days=n) for n in range(4)):
        standin.set_today(day)
        run_ingestion(
            settings, only=["conversions"], start=start, end=day, transport=standin.transport()
        )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        states = query(
            con,
            f"select l.status from {RAW_DATASET}._dlt_pipeline_state s "
            f"left join {RAW_DATASET}._dlt_loads l on l.load_id = s._dlt_load_id",
        )
        (loads,) = query(con, f"select count(*) from {RAW_DATASET}._dlt_loads")[0]
    assert states == [(0,), (0,)] and loads == 4

    conversions = CATALOGUE.get("conversions")
    cursor = window_max(settings, conversions)  # where the newest state's cursor stands
    shutil.rmtree(settings.dlt_working_dir)  # the state must come from the warehouse
    day = DEFAULT_TODAY + timedelta(days=4)
    standin.set_today(day)
    standin.clear_log()
    run_ingestion(
        settings, only=["conversions"], start=start, end=day, transport=standin.transport()
    )
    [asked_from] = {
        r.params["dateFrom"] for r in standin.request_log if route(r.path).name == "conversions"
    }
    lookback = timedelta(days=conversions.lookback_days)
    assert asked_from == str(_day_of(cursor) - lookback) != str(start)  # not a first run again


def _day_of(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value
