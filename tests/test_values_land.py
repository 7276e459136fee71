"""Legal but unusual values land, kept exactly, and the run goes on.

A small fake Incomaker API (an httpx.MockTransport answering in the catalogue's paging dialect)
serves an otherwise normal listing of orders, each order's detail with its items (a nested-list
operation) and the conversions totals. One field of one record carries a value the catalogue's
type cannot hold as it is: an integer sent as text, a tenth decimal place, nanoseconds, an offset,
a number beyond the column, a UUID where the catalogue says integer, a 39-digit amount.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
import yaml
from api_pages import standin_settings

from incomaker_elt.contract.catalogue import Catalogue, Operation, default_catalogue, load_catalogue
from incomaker_elt.contract.paging import put
from incomaker_elt.contract.settings import RAW_DATASET, Settings
from incomaker_elt.ingestion.pipeline import IngestionIncomplete, LoadSummary, run_ingestion
from incomaker_elt.ingestion.raw_columns import has_nested_lists
from incomaker_elt.ingestion.records import arrow_decoder, careful_page
from incomaker_elt.standin import DEFAULT_TODAY, Faults, StandIn

CATALOGUE = dataclasses.replace(default_catalogue(), page_size=100)
TOKEN = "values-token"
START, END = date(2026, 6, 1), date(2026, 6, 30)
ORDERS = 250  # three pages of 100; odd values go on the second
FIRST_ORDER = 5000
ONLY = ["order_detail", "conversions_totals"]  # orders come with order_detail


class Raw(str):
    """A JSON literal written into the body as it is (a number's digits, exactly)."""


_RAW = re.compile(rb'"<<raw:(\d+)>>"')


def dumps(doc: Any) -> bytes:
    literals: list[bytes] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            literals.append(value.encode())
            return f"<<raw:{len(literals) - 1}>>"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    return _RAW.sub(lambda m: literals[int(m.group(1))], orjson.dumps(mark(doc)))


def order(index: int) -> dict[str, Any]:
    created = datetime(2026, 6, 1, 8, tzinfo=UTC) + timedelta(hours=2 * index)
    return {
        "orderId": FIRST_ORDER + index,
        "contactId": 70 + index % 13,
        "createdAt": created.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "country": "CZ",
        "currency": "CZK",
        "amountWoTax": Raw(f"{index}.25"),
        "amountWTax": Raw(f"{index}.5"),
        "amountWoTaxReference": Raw(f"{index}.0125"),
        "amountWTaxReference": Raw(f"{index}.025"),
        "itemsCount": 2,
    }


def items(index: int) -> list[dict[str, Any]]:
    return [
        {
            "lineNumber": line,
            "productId": 300 + line,
            "productName": f"product {line}",
            "quantity": 1,
            "unitPriceWTax": Raw(f"{index}.{line}5"),
            "amountWoTax": Raw(f"{index}.{line}"),
            "amountWTax": Raw(f"{index}.{line}5"),
        }
        for line in (1, 2)
    ]


def totals() -> dict[str, Any]:
    breakdown = {
        "currency": "CZK",
        "conversionsAmountWoTax": Raw("1200.5"),
        "conversionsAmountWTax": Raw("1452.6"),
        "conversionsNumber": 12,
        "averageConversion": Raw("100.041666667"),
        "conversionAmountWoTaxReference": Raw("48.02"),
        "conversionAmountWTaxReference": Raw("58.104"),
    }
    return {
        "uniqueContacts": 10,
        "averageUniqueConversion": Raw("120.05"),
        "conversions": {
            "conversionsAmountWoTax": Raw("48.02"),
            "conversionsAmountWTax": Raw("58.104"),
            "conversionsNumber": 12,
            "currency": "EUR",
            "averageConversion": Raw("4.001666667"),
            "breakdown": [breakdown],
        },
    }


def _set(record: dict[str, Any], dotted: str, literal: str) -> None:
    node: Any = record
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = Raw(literal)


@dataclasses.dataclass
class FakeApi:
    """Orders (paged, filtered by dateFrom/dateTo on createdAt), order details, totals.

    `odd` maps (operation, order index, dotted field) to the JSON literal written there instead:
    ("orders", 150, "orderId") -> '"42"' serves order 150's id as the text "42".
    """

    catalogue: Catalogue
    odd: dict[tuple[str, int, str], str] = dataclasses.field(default_factory=dict)
    orders: int = ORDERS
    asked: list[httpx.Request] = dataclasses.field(default_factory=list)

    def _record(self, operation: str, index: int) -> dict[str, Any]:
        if operation == "orders":
            record = order(index)
        elif operation == "order_detail":
            record = {k: v for k, v in order(index).items() if k != "itemsCount"}
            record["items"] = items(index)
        else:
            record = totals()
        for (where, at, dotted), literal in self.odd.items():
            if where == operation and at == index:
                _set(record, dotted, literal)
        return record

    def _op(self, path: str) -> tuple[Operation, str | None]:
        if path.endswith("/campaigns/senders"):
            return self.catalogue.get("senders"), None
        if path.endswith("/conversions/totals"):
            return self.catalogue.get("conversions_totals"), None
        if path.endswith("/orders"):
            return self.catalogue.get("orders"), None
        found = re.search(r"/orders/([^/]+)$", path)
        assert found, f"the fake API has no {path}"
        return self.catalogue.get("order_detail"), found.group(1)

    def _listing(self, op: Operation, records: list[dict[str, Any]], query: dict[str, str]) -> Any:
        paging = op.paging
        size = int(query.get(paging.size_param, self.catalogue.page_size))
        if paging.style == "offset":
            start = int(query.get(paging.offset_param, 0))
        else:
            start = (
                int(query.get(paging.page_param, paging.first_page)) - paging.first_page
            ) * size
        body = paging.envelope(
            len(records), start, size, paging.next_query(start, size, len(records))
        )
        put(body, op.records_path, records[start : start + size])
        return body

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request)
        op, order_id = self._op(request.url.path)
        query = dict(request.url.params)
        if op.name == "senders":
            body: Any = self._listing(op, [], query)
        elif op.name == "orders":
            first, last = query["dateFrom"], query["dateTo"]
            records = [
                self._record("orders", i)
                for i in range(self.orders)
                if first <= order(i)["createdAt"][:10] <= last
            ]
            body = self._listing(op, records, query)
        elif op.name == "order_detail":
            index = int(str(order_id)) - FIRST_ORDER if str(order_id).isdigit() else -1
            if not 0 <= index < self.orders:
                return httpx.Response(404, json={"error": f"no order {order_id}"})
            body = self._record("order_detail", index)
        else:
            body = self._record("conversions_totals", 0)
        return httpx.Response(200, content=dumps(body))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def settings_for(tmp: Path) -> Settings:
    return standin_settings(tmp, TOKEN)


def ingest(
    tmp: Path, api: FakeApi, end: date = END, only: list[str] = ONLY
) -> tuple[Settings, LoadSummary]:
    settings = settings_for(tmp)
    summary = run_ingestion(
        settings,
        only=only,
        start=START,
        end=end,
        transport=api.transport(),
        catalogue=api.catalogue,
    )
    return settings, summary


def rows(settings: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(sql.replace("raw.", f"{RAW_DATASET}.")).fetchall()


def created(index: int, fraction: str = "", offset: str = "+00:00") -> str:
    """Order `index`'s createdAt with a fraction of a second and an offset (the same instant)."""
    moment = datetime(2026, 6, 1, 8, tzinfo=UTC) + timedelta(hours=2 * index)
    hours = 0 if offset == "Z" else int(offset[:3])
    local = moment + timedelta(hours=hours)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset


def instant(index: int, microseconds: int = 0) -> datetime:
    return datetime(2026, 6, 1, 8, tzinfo=UTC) + timedelta(
        hours=2 * index, microseconds=microseconds
    )


def note_for(summary: LoadSummary, operation: str, field: str) -> Any:
    found = [n for n in summary.values if n.operation == operation and n.field == field]
    assert found, f"no note for {operation}.{field}: {[n.describe() for n in summary.values]}"
    [note] = found
    return note


# ------------------------------------------------------------------ one run, every odd value

ODD = {
    # orders, all on the second page (orders 100..199); the first and third pages are normal
    ("orders", 150, "orderId"): '"5150"',  # the key, as text: exact, converted
    ("orders", 151, "amountWTax"): "12.3456789012",  # a tenth decimal place
    ("orders", 152, "createdAt"): f'"{created(152, ".123456789", "Z")}"',  # nanoseconds
    ("orders", 153, "createdAt"): f'"{created(153, ".25", "+02:00")}"',  # an offset
    ("orders", 154, "contactId"): "9223372036854775808",  # beyond a 64-bit integer
    ("orders", 155, "amountWoTax"): "123456789012345678901234567890123456789",  # 39 digits
    ("orders", 156, "contactId"): '"8f1c2d6e-8a43-4b0e-9a52-5a1b7f0d9e21"',  # a UUID
    ("orders", 157, "itemsCount"): '"3"',  # an integer as text
    # order details: the dict path (nested items)
    ("order_detail", 150, "items.0.amountWTax"): "123456789012345678901234567890.123456789",
    ("order_detail", 151, "amountWTax"): "12345678901234567.891",  # 20 significant digits
    ("order_detail", 152, "createdAt"): f'"{created(152, ".123456789", "Z")}"',
    ("order_detail", 153, "items.1.unitPriceWTax"): "1.0000000001",
    # the totals: a list inside an object
    ("conversions_totals", 0, "conversions.breakdown.0.conversionsAmountWTax"): (
        "98765432109876543210.123456789"
    ),
}


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    api = FakeApi(CATALOGUE, odd=dict(ODD))
    tmp = tmp_path_factory.mktemp("odd")
    settings, summary = ingest(tmp, api)
    return api, tmp, settings, summary


def test_every_record_lands_and_the_run_goes_on(odd_run):
    _, _, settings, summary = odd_run
    assert summary.failures == []
    assert summary.rows_loaded == {
        "orders": ORDERS,
        "order_detail": ORDERS,
        "order_detail__items": 2 * ORDERS,
        "conversions_totals": 1,
        "conversions_totals__conversions__breakdown": 1,
    }


def test_the_normal_values_land_exactly(odd_run):
    _, _, settings, _ = odd_run
    odd_orders = {i for (op, i, _) in ODD if op == "orders"}
    loaded = {
        r[0]: r[1:]
        for r in rows(
            settings,
            "select order_id, contact_id, created_at, amount_wo_tax, amount_w_tax, "
            "amount_wo_tax_reference, amount_w_tax_reference, items_count from raw.orders",
        )
    }
    for i in range(ORDERS):
        if i in odd_orders:
            continue
        o = order(i)
        expected = (
            o["contactId"],
            instant(i),
            Decimal(o["amountWoTax"]),
            Decimal(o["amountWTax"]),
            Decimal(o["amountWoTaxReference"]),
            Decimal(o["amountWTaxReference"]),
            2,
        )
        assert loaded[FIRST_ORDER + i] == expected, i
    items_loaded = rows(
        settings,
        "select d.order_id, i.line_number, i.unit_price_w_tax, i.amount_wo_tax, i.amount_w_tax "
        "from raw.order_detail__items i join raw.order_detail d on i._dlt_parent_id = d._dlt_id",
    )
    assert len(items_loaded) == 2 * ORDERS
    for order_id, line, unit, wo_tax, w_tax in items_loaded:
        i = order_id - FIRST_ORDER
        if i in (150, 153):
            continue
        item = items(i)[line - 1]
        assert (unit, wo_tax, w_tax) == (
            Decimal(item["unitPriceWTax"]),
            Decimal(item["amountWoTax"]),
            Decimal(item["amountWTax"]),
        ), (order_id, line)


def test_odd_values_on_the_flat_path_are_kept_exactly(odd_run):
    _, _, settings, summary = odd_run
    by_id = {
        r[0]: r[1:]
        for r in rows(
            settings,
            "select order_id, contact_id, contact_id__raw, created_at, created_at__raw, "
            "amount_w_tax, amount_w_tax__raw, amount_wo_tax, amount_wo_tax__raw, items_count "
            "from raw.orders",
        )
    }
    # The key sent as text is the same number: converted, merged on as usual.
    assert FIRST_ORDER + 150 in by_id
    assert by_id[5157][-1] == 3  # "3" for an integer: converted exactly
    # A tenth decimal place: not rounded; the typed column is NULL, the text beside it.
    assert by_id[5151][4:6] == (None, "12.3456789012")
    # 39 digits do not fit DECIMAL(38,9): kept as text, every digit.
    assert by_id[5155][6:8] == (None, "123456789012345678901234567890123456789")
    # Beyond a 64-bit integer, and a UUID where the catalogue says integer.
    assert by_id[5154][0:2] == (None, "9223372036854775808")
    assert by_id[5156][0:2] == (None, "8f1c2d6e-8a43-4b0e-9a52-5a1b7f0d9e21")
    # Nanoseconds: the typed column to the microsecond, the exact text beside it.
    assert by_id[5152][2:4] == (instant(152, 123456), created(152, ".123456789", "Z"))
    # An offset is the same instant in UTC, exact: nothing kept beside it.
    assert by_id[5153][2:4] == (instant(153, 250000), None)
    # The other rows have nothing beside their values.
    untouched = [v for k, v in by_id.items() if k - FIRST_ORDER not in range(151, 157)]
    assert all(v[1] is None and v[3] is None and v[5] is None and v[7] is None for v in untouched)

    amount = note_for(summary, "orders", "amountWTax")
    assert (amount.example, amount.count, amount.column) == ("12.3456789012", 1, "amount_w_tax")
    assert "orders.amountWTax" in amount.describe() and "12.3456789012" in amount.describe()
    assert amount.override == "operations: {orders: {fields: {amountWTax: string}}}"
    # Two values of one field: one note, the override that holds both (a UUID needs text).
    contact = note_for(summary, "orders", "contactId")
    assert contact.count == 2 and contact.example == "9223372036854775808"
    assert contact.override == "operations: {orders: {fields: {contactId: string}}}"
    wide = note_for(summary, "orders", "amountWoTax")
    assert "39 digits" in wide.describe()
    nanos = note_for(summary, "orders", "createdAt")
    assert nanos.outcome == "microseconds" and "created_at__raw" in nanos.describe()
    as_text = note_for(summary, "orders", "itemsCount")
    assert as_text.outcome == "converted" and as_text.override is None


def test_amounts_on_nested_list_operations_never_pass_through_floats(odd_run):
    _, _, settings, summary = odd_run
    [(w_tax,)] = rows(settings, "select amount_w_tax from raw.order_detail where order_id = 5151")
    assert w_tax == Decimal("12345678901234567.891")
    [(typed, raw)] = rows(
        settings,
        "select i.amount_w_tax, i.amount_w_tax__raw from raw.order_detail__items i "
        "join raw.order_detail d on i._dlt_parent_id = d._dlt_id "
        "where d.order_id = 5150 and i.line_number = 1",
    )
    assert (typed, raw) == (None, "123456789012345678901234567890.123456789")
    [(typed, raw)] = rows(
        settings,
        "select i.unit_price_w_tax, i.unit_price_w_tax__raw from raw.order_detail__items i "
        "join raw.order_detail d on i._dlt_parent_id = d._dlt_id "
        "where d.order_id = 5153 and i.line_number = 2",
    )
    assert (typed, raw) == (None, "1.0000000001")
    [(created_at, created_raw)] = rows(
        settings, "select created_at, created_at__raw from raw.order_detail where order_id = 5152"
    )
    assert (created_at, created_raw) == (instant(152, 123456), created(152, ".123456789", "Z"))
    [(breakdown,)] = rows(
        settings,
        "select conversions_amount_w_tax from raw.conversions_totals__conversions__breakdown",
    )
    assert breakdown == Decimal("98765432109876543210.123456789")
    item = note_for(summary, "order_detail", "items.amountWTax")
    assert item.table == "order_detail__items"
    assert item.override == "operations: {order_detail: {nested: {items: {amountWTax: string}}}}"


def test_the_cursor_advances_to_the_last_order(odd_run):
    api, tmp, settings, _ = odd_run
    last = instant(ORDERS - 1)
    [(loaded_max,)] = rows(settings, "select max(created_at) from raw.orders")
    assert loaded_max == last
    api.asked.clear()
    ingest(tmp, api, end=END + timedelta(days=1))
    windows = {
        (r.url.params["dateFrom"], r.url.params["dateTo"])
        for r in api.asked
        if r.url.path.endswith("/orders") and "dateFrom" in r.url.params
    }
    lookback = CATALOGUE.get("orders").lookback_days
    assert windows == {(str((last - timedelta(days=lookback)).date()), str(END + timedelta(1)))}
    [(count, distinct)] = rows(
        settings, "select count(*), count(distinct order_id) from raw.orders"
    )
    assert count == distinct == ORDERS


# ------------------------------------------------------------------ a key that does not fit


def test_a_key_that_does_not_fit_stops_only_its_operation_and_names_the_override(tmp_path):
    uuid = "8f1c2d6e-8a43-4b0e-9a52-5a1b7f0d9e21"
    api = FakeApi(CATALOGUE, odd={("orders", 150, "orderId"): f'"{uuid}"'})
    with pytest.raises(IngestionIncomplete) as raised:
        ingest(tmp_path, api)
    summary = raised.value.summary
    assert summary.failed_operations == ["orders", "order_detail"]
    [failure] = summary.failures
    assert uuid in failure.reason and "orderId" in failure.reason
    assert "operations: {orders: {fields: {orderId: string}}}" in failure.reason
    # The other family loaded; nothing of orders was written (its cursor did not move).
    assert summary.rows_loaded == {
        "conversions_totals": 1,
        "conversions_totals__conversions__breakdown": 1,
    }


# ------------------------------------------------------------------ the careful path is the same


def test_the_careful_path_decodes_normal_pages_as_the_arrow_path_does(small_world):
    """Every flat top-level operation of the stand-in, with a field the catalogue does not know
    (schema drift): the page decoded value by value equals the page decoded by the Arrow reader,
    with no notes."""
    compared = 0
    for drift in (True,):
        standin = StandIn(small_world, token=TOKEN, faults=Faults(drift=drift))
        with httpx.Client(
            transport=standin.transport(),
            base_url="http://standin",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            for op in CATALOGUE:
                if has_nested_lists(op) or op.parent is not None:
                    continue
                params = {"dateFrom": "2026-05-01", "dateTo": str(DEFAULT_TODAY)}
                params = params if op.is_windowed else {}
                response = client.get(op.url_path(), params={**params, **op.paging.params(0, 1000)})
                assert response.status_code == 200, op.name
                fast = arrow_decoder(op)(response.content)
                careful = careful_page(op, response.content)
                assert careful.records.equals(fast.records), op.name
                assert (careful.rows, careful.totals, careful.notes) == (fast.rows, fast.totals, ())
                compared += 1
    assert compared > 30


def test_the_override_named_types_the_field(odd_run, tmp_path):
    """The override a note names is valid as it is, and with it the same values land typed."""
    _, _, _, summary = odd_run
    override = note_for(summary, "orders", "contactId").override
    assert override is not None
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(override)))
    catalogue = dataclasses.replace(load_catalogue(path), page_size=CATALOGUE.page_size)
    uuid = "8f1c2d6e-8a43-4b0e-9a52-5a1b7f0d9e21"
    api = FakeApi(catalogue, odd={("orders", 156, "contactId"): f'"{uuid}"'})
    settings, again = ingest(tmp_path, api)
    assert [n for n in again.values if n.operation == "orders" and n.outcome == "kept"] == []
    assert rows(settings, "select contact_id from raw.orders where order_id = 5156") == [(uuid,)]
    expected = [(str(order(155)["contactId"]),)]  # a number in a text field: its digits
    assert rows(settings, "select contact_id from raw.orders where order_id = 5155") == expected


def test_the_ingest_command_prints_the_notes_after_its_table(odd_run):
    from incomaker_elt.ingestion.cli import _values

    _, _, _, summary = odd_run
    lines = _values(summary)
    assert len(lines) == 1 + len(summary.values)
    [line] = [x for x in lines if "orders.amountWTax" in x]
    assert "12.3456789012" in line and "{orders: {fields: {amountWTax: string}}}" in line


# ------------------------------------------------------------------ the Dagster materialisation


class _Served(BaseHTTPRequestHandler):
    api: FakeApi

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        response = self.api.handle(httpx.Request("GET", "http://fake" + self.path))
        body = response.read()
        self.send_response(response.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_the_materialisation_names_the_field_the_value_and_the_override(tmp_path):
    """Dagster's raw assets (the API over a socket, as in production): each affected table's
    materialisation carries its notes."""
    import dagster as dg

    from incomaker_elt.orchestration.ingestion_assets import build_raw_assets
    from incomaker_elt.orchestration.resources import api_resource

    names = {"senders", "orders", "order_detail", "conversions_totals"}
    catalogue = dataclasses.replace(
        CATALOGUE, operations=tuple(op for op in CATALOGUE if op.name in names)
    )
    handler = type("Handler", (_Served,), {"api": FakeApi(catalogue, odd=dict(ODD))})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = dataclasses.replace(
            settings_for(tmp_path), base_url=f"http://127.0.0.1:{server.server_port}"
        )
        partitions = dg.DailyPartitionsDefinition(start_date="2026-06-01", end_date="2026-07-01")
        events, _ = build_raw_assets(settings, catalogue, partitions)
        result = dg.materialize(
            [events],
            resources={"incomaker_api": api_resource(settings)},
            partition_key="2026-06-13",  # orders 150..161: the odd ones among them
            instance=dg.DagsterInstance.ephemeral(),
        )
    finally:
        server.shutdown()
    assert result.success
    notes = {
        m.asset_key.path[-1]: m.metadata.get("values_not_as_typed")
        for m in result.asset_materializations_for_node("incomaker_raw_events")
    }
    orders = notes["orders"].value
    assert "orders.amountWTax" in orders and "'12.3456789012'" in orders
    assert "operations: {orders: {fields: {amountWTax: string}}}" in orders
    detail = notes["order_detail"].value
    assert "order_detail.items.amountWTax" in detail
    assert "'123456789012345678901234567890.123456789'" in detail


def test_the_token_check_decodes_a_page_whose_key_does_not_fit_without_stopping_the_run():
    """Decoding never raises for a value (the one-record token check decodes pages too): the
    page carries a key note, and only fetching records to load refuses it."""
    op = CATALOGUE.get("orders")
    api = FakeApi(CATALOGUE, odd={("orders", 0, "orderId"): '"not-a-number"'})
    query = {"dateFrom": str(START), "dateTo": str(END), **op.paging.params(0, 1)}
    body = api.handle(httpx.Request("GET", "http://fake/orders", params=query)).read()
    page = arrow_decoder(op)(body)
    [note] = page.notes
    assert (note.key, note.field, note.example) == (True, "orderId", "not-a-number")
