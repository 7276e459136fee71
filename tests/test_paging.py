"""Paging dialects as data: the one description everything that pages reads."""

from __future__ import annotations

import pytest

from incomaker_elt.contract.paging import (
    DIALECTS,
    PageTotals,
    PagingError,
    as_spec,
    follow,
    paging_from,
    walk,
)

VENDOR = DIALECTS["offset"]
SPRING = DIALECTS["page"]


def test_vendor_paging_asks_by_offset_and_reads_the_paging_object() -> None:
    assert VENDOR.params(0, 60) == {"offset": "0", "limit": "60"}
    assert VENDOR.params(3, 60) == {"offset": "180", "limit": "60"}
    body = {
        "jobs": [],
        "paging": {
            "offset": 40,
            "limit": 60,
            "totalItems": 100,
            "totalPages": 2,
            "links": [{"href": "?offset=100&limit=60", "rel": "next"}],
        },
    }
    totals = VENDOR.totals(body)
    assert totals == PageTotals(100, 2, "?offset=100&limit=60", True)
    assert VENDOR.page_count(totals, 60) == 2


def test_spring_paging_asks_by_page_and_reads_total_elements() -> None:
    assert SPRING.params(2, 50) == {"page": "2", "size": "50"}
    assert SPRING.records_path("orders") == "content"
    totals = SPRING.totals({"content": [], "totalElements": 101, "totalPages": 3})
    assert SPRING.page_count(totals, 50) == 3


def test_page_count_from_items_alone_rounds_up() -> None:
    only_items = paging_from({"total_pages": None})
    assert only_items.page_count(only_items.totals({"paging": {"totalItems": 101}}), 50) == 3
    assert only_items.page_count(only_items.totals({"paging": {"totalItems": 0}}), 50) == 1
    assert only_items.page_count(only_items.totals({"paging": {}}), 50) is None


@pytest.mark.parametrize("dialect", ["offset", "page"])
def test_the_stand_in_envelope_reads_back_as_the_same_totals(dialect: str) -> None:
    paging = DIALECTS[dialect]
    for start, total in [(0, 0), (0, 7), (20, 45), (40, 45)]:
        body = paging.envelope(total, start, 20, paging.next_query(start, 20, total))
        totals = paging.totals(body)
        assert totals.total_items == total
        assert paging.page_count(totals, 20) == max(1, -(-total // 20))
        if dialect == "offset":
            assert (totals.next_href is None) == (start + 20 >= total)


def test_a_mapping_changes_keys_of_the_default_dialect() -> None:
    custom = paging_from({"size_param": "pageSize", "next_link": None}, VENDOR)
    assert custom.params(1, 10) == {"offset": "10", "pageSize": "10"}
    assert custom.next_link is None and custom.total_items == "paging.totalItems"
    from_spring = paging_from({"dialect": "page", "first_page": 1}, VENDOR)
    assert from_spring.params(0, 10) == {"page": "1", "size": "10"}
    assert as_spec(from_spring) == {"dialect": "page", "first_page": 1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cursor", "unknown paging dialect 'cursor'"),
        ({"style": "scroll"}, "style must be one of"),
        ({"first_page": "one"}, "first_page must be a whole number"),
        ({"pageSize": 3}, "unknown keys ['pageSize']"),
        ({"records": 5}, "records must be text"),
        (["offset"], "must be a dialect name or a mapping"),
    ],
)
def test_a_bad_paging_description_names_the_key(spec: object, message: str) -> None:
    with pytest.raises(PagingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        paging_from(spec, VENDOR, "operations.orders.paging")


def test_following_a_next_link_keeps_the_other_parameters() -> None:
    params = {"dateFrom": "2026-01-01", "offset": "0", "limit": "2"}
    assert follow("?offset=2&limit=2", "/orders", params) == (
        "/orders",
        {"dateFrom": "2026-01-01", "offset": "2", "limit": "2"},
    )
    assert follow("/v1/orders?cursor=abc", "/orders", {}, "/v1") == ("/orders", {"cursor": "abc"})
    assert follow("/export/orders?p=2", "/orders", {}) == ("/export/orders", {"p": "2"})
    assert follow("https://api.example/v1/orders?p=3", "/orders", {})[0] == (
        "https://api.example/v1/orders"
    )


def _server(records: int, dialect_body):  # noqa: ANN001, ANN202
    """A fake listing of `records` numbers; dialect_body(params, rows) builds each body."""
    seen: list[dict[str, str]] = []

    def fetch(path: str, params: dict[str, str]):  # noqa: ANN202
        seen.append(dict(params))
        body, rows = dialect_body(params, list(range(records)))
        return rows, len(rows), body

    return fetch, seen


def test_walk_follows_next_links_when_there_are_no_totals() -> None:
    paging = paging_from({"total_items": None, "total_pages": None, "next_link": "meta.next"})

    def body(params: dict[str, str], everything: list[int]):  # noqa: ANN202
        start, size = int(params.get("offset", 0)), int(params["limit"])
        rows = everything[start : start + size]
        nxt = f"?offset={start + size}&limit={size}" if start + size < len(everything) else None
        return paging.totals({"meta": {"next": nxt}}), rows

    fetch, seen = _server(7, body)
    pages = list(walk(paging, fetch, "/x", {"dateFrom": "2026-01-01"}, 3))
    assert [r for page in pages for r in page] == list(range(7))
    assert all(p["dateFrom"] == "2026-01-01" for p in seen)
    assert len(seen) == 3


@pytest.mark.parametrize("records", [0, 5, 6, 7])
def test_walk_without_totals_or_links_stops_at_a_short_page(records: int) -> None:
    paging = paging_from(
        {"dialect": "page", "total_items": None, "total_pages": None, "next_link": None}
    )

    def body(params: dict[str, str], everything: list[int]):  # noqa: ANN202
        size = int(params["size"])
        start = int(params["page"]) * size
        return PageTotals(), everything[start : start + size]

    fetch, seen = _server(records, body)
    pages = list(walk(paging, fetch, "/x", {}, 3))
    assert [r for page in pages for r in page] == list(range(records))
    # a listing of a whole number of pages needs one empty page to know it has ended
    assert len(seen) == records // 3 + 1


def test_walk_with_totals_asks_exactly_the_pages_there_are() -> None:
    def body(params: dict[str, str], everything: list[int]):  # noqa: ANN202
        start, size = int(params["offset"]), int(params["limit"])
        rows = everything[start : start + size]
        return VENDOR.totals(VENDOR.envelope(len(everything), start, size, None)), rows

    fetch, seen = _server(10, body)
    pages = list(walk(VENDOR, fetch, "/x", {}, 4))
    assert [r for page in pages for r in page] == list(range(10))
    assert [p["offset"] for p in seen] == ["0", "4", "8"]


def test_an_unpaged_operation_is_one_request() -> None:
    fetch, seen = _server(3, lambda params, everything: (PageTotals(), everything))
    assert list(walk(DIALECTS["none"], fetch, "/x", {"a": "1"}, 50)) == [[0, 1, 2]]
    assert seen == [{"a": "1"}]


def test_an_answer_without_the_records_fails_its_operation_and_says_what_to_do() -> None:
    from incomaker_elt.contract.catalogue import load_catalogue
    from incomaker_elt.ingestion.records import UnexpectedBody, arrow_decoder, dict_decoder

    catalogue = load_catalogue()
    spring_body = b'{"content": [{"orderId": 1}], "totalElements": 1, "totalPages": 1}'
    for op, decode in [
        (catalogue.get("orders"), arrow_decoder(catalogue.get("orders"))),
        (catalogue.get("contacts_details"), dict_decoder(catalogue.get("contacts_details"))),
    ]:
        with pytest.raises(UnexpectedBody, match="incomaker-elt probe") as failure:
            decode(spring_body)
        assert repr(op.records_path) in str(failure.value)
        assert "content, totalElements, totalPages" in str(failure.value)
    # present but empty, or null, is an empty page
    assert arrow_decoder(catalogue.get("orders"))(b'{"orders": [], "paging": {}}').rows == 0
    assert arrow_decoder(catalogue.get("orders"))(b'{"orders": null}').rows == 0


def test_a_fixed_backfill_window_filters_on_the_column_the_records_have() -> None:
    """Both decoders name top-level fields in dlt's snake_case, nested-list operations too."""
    from datetime import date

    from incomaker_elt.contract.catalogue import load_catalogue
    from incomaker_elt.contract.columns import snake
    from incomaker_elt.ingestion.raw_columns import column_hints
    from incomaker_elt.ingestion.source import RunDates, window_cursor

    catalogue = load_catalogue()
    windowed = [op for op in catalogue if op.window]
    day = date(2026, 6, 10)
    for op in windowed:
        cursor = window_cursor(op, RunDates(day, day, fixed=True))
        assert cursor.cursor_path == snake(op.window) in column_hints(op), op.name
        # dlt's backfill mode: an end value, no lookback, the cursor state neither read nor moved
        assert cursor.end_value is not None and not cursor.lag, op.name
