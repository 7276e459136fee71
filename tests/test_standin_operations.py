"""Every catalogue operation answers from the stand-in with the catalogue's record shape."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from ingestion.catalogue import Operation, default_catalogue
from standin import StandIn

CATALOGUE = default_catalogue()
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(scope="module")
def api(small_world) -> httpx.Client:
    standin = StandIn(small_world)
    with httpx.Client(
        transport=standin.transport(),
        base_url="http://standin",
        headers={"Authorization": "Bearer standin-token"},
    ) as client:
        yield client


def records_of(op: Operation, body: Any) -> list[dict[str, Any]]:
    if op.records == "$":
        return [body]
    return body[op.records]


def fetch(api: httpx.Client, op: Operation, parent_value: Any = None, **params: Any) -> Any:
    path = op.path
    if op.parent and parent_value is not None:
        if op.parent.into in op.path_params:
            path = op.url_path(**{op.parent.into: parent_value})
        else:
            params[op.parent.into] = str(parent_value)
    response = api.get(path, params=params)
    assert response.status_code == 200, f"{op.name}: {response.status_code} {response.text}"
    return response.json()


_first_records: dict[str, list[dict[str, Any]]] = {}


def sample_records(api: httpx.Client, op: Operation) -> list[dict[str, Any]]:
    """Records of an operation; per-id operations use an id from the parent's first record."""
    if op.name not in _first_records:
        parent_value = None
        if op.parent:
            parent = sample_records(api, CATALOGUE.get(op.parent.resource))
            parent_value = parent[0][op.parent.field]
        params = {"size": 50} if op.is_paged else {}
        _first_records[op.name] = records_of(op, fetch(api, op, parent_value, **params))
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
    assert list(record) == list(fields), f"{op.name} {prefix or 'record'} fields differ"
    for name, kind in fields.items():
        value = record[name]
        check_value(f"{op.name}.{prefix}{name}", kind, value)
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


@pytest.mark.parametrize(
    "name",
    ["orders", "conversions", "contacts", "delivery_recipient_activity", "contacts_for_period"],
)
def test_paging_returns_every_record_exactly_once(api: httpx.Client, name: str) -> None:
    op = CATALOGUE.get(name)
    first = fetch(api, op, size=311)
    total, pages = first["totalElements"], first["totalPages"]
    assert total > 311 and pages == -(-total // 311)
    assert first["number"] == 0 and first["size"] == 311
    keys = []
    for page in range(pages):
        body = fetch(api, op, page=page, size=311)
        assert body["number"] == page
        keys += [tuple(r[k] for k in op.primary_key) for r in body["content"]]
    assert len(keys) == total == len(set(keys))
    assert keys == sorted(keys)
    whole = [tuple(r[k] for k in op.primary_key) for r in fetch(api, op, size=1000)["content"]]
    assert keys[: len(whole)] == whole


def test_page_past_the_end_is_empty(api: httpx.Client) -> None:
    body = fetch(api, CATALOGUE.get("orders"), page=10_000, size=100)
    assert body["content"] == [] and body["totalElements"] > 0 and body["number"] == 10_000


def test_default_page_size_is_20(api: httpx.Client) -> None:
    body = fetch(api, CATALOGUE.get("orders"))
    assert body["size"] == 20 and len(body["content"]) == 20


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
        assert response.json()["status"] == 404


def test_literal_routes_win_over_placeholders(api: httpx.Client) -> None:
    assert "content" in api.get("/deliveries/conversions").json()
    assert "content" in api.get("/products/categories").json()
    assert "content" in api.get("/campaigns/senders").json()


def test_comma_lists_filter_like_a_union(api: httpx.Client) -> None:
    op = CATALOGUE.get("orders")
    both = fetch(api, op, country="CZ,SK", size=1)["totalElements"]
    cz = fetch(api, op, country="CZ", size=1)["totalElements"]
    sk = fetch(api, op, country="SK", size=1)["totalElements"]
    assert both == cz + sk and cz and sk


def test_contacts_details_by_ids(api: httpx.Client) -> None:
    body = api.get("/contacts/details", params={"ids": "3,1,2,99999999"}).json()
    assert [c["contactId"] for c in body["contacts"]] == [1, 2, 3]
    assert api.get("/contacts/details").status_code == 400


def test_an_empty_window_answers_empty_lists_and_zero_totals(api: httpx.Client) -> None:
    future = {"dateFrom": "2026-12-01"}
    body = api.get("/conversions", params=future).json()
    assert body["content"] == [] and body["totalElements"] == 0 and body["totalPages"] == 0
    assert api.get("/rfm/cells", params=future).json() == {"cells": []}
    totals = api.get("/conversions/totals", params=future).json()
    assert totals["uniqueContacts"] == 0 and totals["conversions"]["breakdown"] == []
    assert api.get("/rfm/cells/555", params=future).status_code == 404
