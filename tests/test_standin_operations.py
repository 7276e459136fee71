"""Every catalogue operation answers from the stand-in with the catalogue's record shape."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from api_pages import (
    HEADERS,
    ISO_TIMESTAMP,
    all_records,
    first_page,
    first_records,
    operation_at,
    page_body,
    page_params,
    records_of,
    total_items,
)

from incomaker_elt.contract.catalogue import Catalogue, Operation, default_catalogue
from incomaker_elt.contract.paging import dig, follow
from incomaker_elt.standin import StandIn
from incomaker_elt.standin.dialect import integer_id, shows_as_uuid

CATALOGUE = default_catalogue()
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def api(small_world) -> httpx.Client:
    standin = StandIn(small_world)
    with httpx.Client(
        transport=standin.transport(),
        base_url="http://standin",
        headers={"Authorization": "Bearer standin-token"},
    ) as client:
        yield client


@pytest.fixture(scope="module")
def served(small_world, dialect) -> tuple[str, Catalogue, httpx.Client]:
    """(dialect name, its catalogue, a client of a stand-in answering in it)."""
    name, catalogue, _ = dialect
    standin = StandIn(small_world, catalogue=catalogue)
    with httpx.Client(
        transport=standin.transport(), base_url="http://standin", headers=HEADERS
    ) as client:
        yield name, catalogue, client


def fetch(api: httpx.Client, op: Operation, parent_value: Any = None, size: int = 50) -> Any:
    """The first page of `op`; per-id operations for one parent value."""
    path, params = op.path, {}
    if op.parent and parent_value is not None:
        if op.parent.into in op.path_params:
            path = op.url_path(**{op.parent.into: parent_value})
        else:
            params[op.parent.into] = str(parent_value)
    return first_page(api, op, size, path, **params)


_first_records: dict[str, list[dict[str, Any]]] = {}


def sample_records(api: httpx.Client, op: Operation) -> list[dict[str, Any]]:
    """Records of an operation; per-id operations use an id from the parent's first record."""
    if op.name not in _first_records:
        parent_value = None
        if op.parent:
            parent = sample_records(api, CATALOGUE.get(op.parent.resource))
            parent_value = parent[0][op.parent.field]
        _first_records[op.name] = records_of(op, fetch(api, op, parent_value))
    return _first_records[op.name]


def check_value(where: str, kind: str, value: Any) -> None:
    if value is None:
        return
    if kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "decimal":
        assert isinstance(value, int | float) and not isinstance(value, bool), where
        assert round(value, 2) == value, f"{where}: {value} has more than two decimals"
    elif kind == "boolean":
        assert isinstance(value, bool), where
    elif kind == "string":
        assert isinstance(value, str), where
    elif kind == "date":
        assert isinstance(value, str) and ISO_DATE.match(value), f"{where}: {value!r}"
    elif kind == "timestamp":
        assert isinstance(value, str) and ISO_TIMESTAMP.match(value), f"{where}: {value!r}"
    elif kind == "list":
        assert isinstance(value, list), where
    elif kind == "object":
        assert isinstance(value, dict), where


def check_shape(op: Operation, record: dict[str, Any], fields: dict[str, str], prefix: str) -> None:
    names = {name: op.api_name(name) if not prefix else name for name in fields}
    assert list(record) == list(names.values()), f"{op.name} {prefix or 'record'} fields differ"
    for name, kind in fields.items():
        value = record[names[name]]
        check_value(f"{op.name}.{prefix}{name}", kind, value)
        if shows_as_uuid(name, kind) and value is not None:  # the vendor's UUID ids
            assert integer_id(name, value) is not None, f"{op.name}.{name}: {value!r}"
        nested_key = f"{prefix}{name}"
        if kind in ("list", "object") and nested_key in op.nested and value is not None:
            for item in value if kind == "list" else [value]:
                check_shape(op, item, op.nested[nested_key], f"{nested_key}.")


@pytest.mark.parametrize("op", CATALOGUE.operations, ids=lambda op: op.name)
def test_operation_answers_with_catalogue_fields(api: httpx.Client, op: Operation) -> None:
    records = sample_records(api, op)
    assert records, f"{op.name} answered no records at small"
    for record in records:
        check_shape(op, record, op.fields, "")


def test_all_68_operations_are_served() -> None:
    assert len(CATALOGUE) == 68


def test_records_are_sorted_by_primary_key(api: httpx.Client) -> None:
    for op in CATALOGUE:
        if not op.primary_key or op.records == "$":
            continue
        records = sample_records(api, op)
        keys = [tuple(r[k] for k in op.primary_key) for r in records]
        assert keys == sorted(keys), op.name
        assert len(set(keys)) == len(keys), f"{op.name}: primary key repeats"


def position(op: Operation, body: Any) -> int:
    """The offset or page number a body says it answers."""
    return int(dig(body, op.paging.position_field))


def asked_position(op: Operation, index: int, size: int) -> int:
    """The offset or page number page `index` is asked for with, in the op's dialect."""
    paging = op.paging
    name = paging.offset_param if paging.style == "offset" else paging.page_param
    return int(paging.params(index, size)[name])


@pytest.mark.parametrize(
    "name",
    ["orders", "conversions", "contacts", "delivery_recipient_activity", "contacts_for_period"],
)
def test_paging_returns_every_record_exactly_once(served, name: str) -> None:
    dialect, catalogue, api = served
    op = catalogue.get(name)
    first = first_page(api, op, 311)
    totals = op.paging.totals(first)
    total = total_items(api, op)
    pages = -(-total // 311)
    assert total > 311 and op.paging.page_count(totals, 311) == pages, dialect
    assert position(op, first) == asked_position(op, 0, 311)
    assert int(dig(first, op.paging.size_field)) == 311
    keys = []
    for index in range(pages):
        body = page_body(api, op, index, 311)
        assert position(op, body) == asked_position(op, index, 311), (dialect, index)
        next_href = op.paging.totals(body).next_href
        if op.paging.next_link and index + 1 < pages:  # the link names the next page
            assert follow(next_href, op.path, {})[1] == page_params(op, index + 1, 311)
        elif op.paging.next_link:
            assert next_href is None, "the last page links to no next one"
        keys += [tuple(r[k] for k in op.primary_key) for r in records_of(op, body)]
    assert len(keys) == total == len(set(keys))
    assert keys == sorted(keys)
    walked = [tuple(r[k] for k in op.primary_key) for r in all_records(api, op, 311)]
    assert walked == keys, "walking the listing gives the pages read one by one"
    whole = [tuple(r[k] for k in op.primary_key) for r in first_records(api, op, 1000)]
    assert keys[: len(whole)] == whole


def test_page_past_the_end_is_empty(served) -> None:
    _, catalogue, api = served
    op = catalogue.get("orders")
    body = page_body(api, op, 10_000, 100)
    assert records_of(op, body) == [] and total_items(api, op) > 0
    assert position(op, body) == asked_position(op, 10_000, 100)


def test_default_page_size_is_20(served) -> None:
    _, catalogue, api = served
    op = catalogue.get("orders")
    body = api.get(op.path).json()
    assert int(dig(body, op.paging.size_field)) == 20 and len(records_of(op, body)) == 20


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    for path in (
        "/campaigns/999999/recipients",
        "/orders/99999999",
        "/deliveries/99999",
        "/deliveries/smartflows/999/daily",
        "/abandoned-carts/99999999",
        "/products/99999",
        "/rfm/contacts/99999999",
        "/nowhere",
    ):
        response = api.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"error"}, path


def test_literal_routes_win_over_placeholders(api: httpx.Client) -> None:
    for path in ("/deliveries/conversions", "/products/categories", "/campaigns/senders"):
        op = operation_at(CATALOGUE, path)
        assert "{" not in op.path
        assert isinstance(records_of(op, api.get(path).json()), list), path


def test_comma_lists_filter_like_a_union(api: httpx.Client) -> None:
    op = CATALOGUE.get("orders")
    both = total_items(api, op, country="CZ,SK")
    cz = total_items(api, op, country="CZ")
    sk = total_items(api, op, country="SK")
    assert both == cz + sk and cz and sk


def test_contacts_details_by_ids(api: httpx.Client) -> None:
    op = CATALOGUE.get("contacts_details")
    body = api.get("/contacts/details", params={"ids": "3,1,2,99999999"}).json()
    assert [c["contactId"] for c in records_of(op, body)] == [1, 2, 3]
    assert api.get("/contacts/details").status_code == 400


def test_an_empty_window_answers_empty_lists_and_zero_totals(api: httpx.Client) -> None:
    future = {"dateFrom": "2026-12-01"}
    conversions = CATALOGUE.get("conversions")
    body = first_page(api, conversions, 1000, **future)
    totals = conversions.paging.totals(body)
    assert records_of(conversions, body) == [] and totals.total_items == 0
    assert totals.total_pages in (0, None) and totals.next_href is None
    cells = CATALOGUE.get("rfm_cells")
    assert records_of(cells, api.get("/rfm/cells", params=future).json()) == []
    totals = api.get("/conversions/totals", params=future).json()
    assert totals["uniqueContacts"] == 0 and totals["conversions"]["breakdown"] == []
    assert api.get("/rfm/cells/555", params=future).status_code == 404
