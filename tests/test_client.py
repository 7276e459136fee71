"""The API client's failure policy, against scripted responses (httpx.MockTransport)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from incomaker_elt.contract.catalogue import Operation, default_catalogue
from incomaker_elt.contract.paging import put
from incomaker_elt.ingestion.client import (
    ApiUnavailable,
    IncomakerClient,
    RequestRejected,
    RetryPolicy,
    TokenRejected,
)
from incomaker_elt.ingestion.records import arrow_decoder, dict_decoder

TOKEN = "secret-token-123"
SEGMENTS = default_catalogue().get("segments")


def page_body(op: Operation, records: list[dict[str, Any]], total: int, size: int = 1000) -> bytes:
    """The first page of a listing of `total` records, in the operation's paging dialect."""
    body = op.paging.envelope(total, 0, size, op.paging.next_query(0, size, total))
    put(body, op.records_path, records)
    return orjson.dumps(body)


PAGE = page_body(
    SEGMENTS, [{"segmentId": 1, "name": "VIP", "createdAt": "2026-01-02T04:04:05+01:00"}], 1
)


def scripted(responses: list[Callable[[httpx.Request], httpx.Response]]):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = responses[min(len(seen), len(responses)) - 1]
        return step(request)

    return httpx.MockTransport(handler), seen


def ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PAGE)


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b"{}"):
    return lambda _: httpx.Response(code, headers=headers, content=body)


def client_for(transport: httpx.BaseTransport, sleeps: list[float], attempts: int = 5):
    return IncomakerClient(
        "http://api.test/v1",
        TOKEN,
        transport=transport,
        retry=RetryPolicy(max_attempts=attempts, backoff_base=0.01, backoff_cap=0.05),
        sleep=sleeps.append,
    )


def get_segments(client: IncomakerClient):
    op = SEGMENTS
    return client.get(op.name, op.url_path(), op.paging.params(0, 1000), arrow_decoder(op))


def test_sends_the_bearer_token_and_decodes_a_page():
    transport, seen = scripted([ok])
    page = get_segments(client_for(transport, []))
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen[0].url.path == "/v1/segments"
    assert page.rows == 1
    assert dict(seen[0].url.params) == SEGMENTS.paging.params(0, 1000)
    # every catalogue field is a column, present in the body or not
    assert page.records.column_names == ["segment_id", "name", "created_at", "contacts_count"]
    created = page.records.column("created_at").to_pylist()[0]
    assert created == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "the instant, whatever offset"


def test_retries_429_and_5xx_honouring_retry_after():
    transport, seen = scripted(
        [status(429, {"Retry-After": "2"}), status(500), status(502), status(503), ok]
    )
    sleeps: list[float] = []
    page = get_segments(client_for(transport, sleeps))
    assert page.rows == 1
    assert len(seen) == 5
    assert sleeps[0] >= 2.0, "the wait asked for by Retry-After is honoured"
    assert all(s <= 0.05 for s in sleeps[1:])


def test_retries_truncated_bodies_and_timeouts():
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    transport, seen = scripted([status(200, body=PAGE[: len(PAGE) // 2]), timeout, ok])
    page = get_segments(client_for(transport, []))
    assert page.rows == 1
    assert len(seen) == 3


def test_gives_up_after_the_bounded_attempts():
    transport, seen = scripted([status(503)])
    with pytest.raises(ApiUnavailable, match=r"'segments'.*HTTP 503 after 3 attempts"):
        get_segments(client_for(transport, [], attempts=3))
    assert len(seen) == 3


@pytest.mark.parametrize("code", [401, 403])
def test_rejected_token_fails_at_once_without_printing_it(code, caplog):
    caplog.set_level(logging.DEBUG)
    transport, seen = scripted([status(code, body=b'{"error": "invalid JWT"}')])
    with pytest.raises(TokenRejected) as failure:
        get_segments(client_for(transport, []))
    assert len(seen) == 1
    message = str(failure.value)
    assert "rejected the token" in message and "'segments'" in message
    assert TOKEN not in message and TOKEN not in caplog.text


def test_other_client_errors_name_operation_params_and_server_message():
    size = SEGMENTS.paging.size_param
    error = {"error": f"{size} must be <= 1000", "parameter": size}
    transport, seen = scripted([status(400, body=orjson.dumps(error))])
    with pytest.raises(RequestRejected) as failure:
        get_segments(client_for(transport, []))
    assert len(seen) == 1
    message = str(failure.value)
    assert "'segments'" in message and f"{size}=1000" in message
    assert f"{size} must be <= 1000" in message and "HTTP 400" in message
    assert f"(parameter {size})" in message


def test_decoders_keep_unknown_fields_and_type_known_ones():
    catalogue = default_catalogue()
    op = catalogue.get("conversions")
    record = {
        "conversionId": 7,
        "date": "2026-06-30",
        "createdAt": "2026-06-30T12:00:00+02:00",
        "conversionAmountWTax": 121.21,
        "loyaltyTier": "gold",
    }
    body = page_body(op, [record], total=2500)
    page = arrow_decoder(op)(body)
    table = page.records
    assert page.totals.total_pages == 3 and page.totals.total_items == 2500
    assert op.paging.page_count(page.totals, 1000) == 3
    created = table.column("created_at").to_pylist()
    assert created == [datetime(2026, 6, 30, 10, tzinfo=UTC)]
    assert str(table.schema.field("date").type) == "date32[day]"
    assert str(table.schema.field("conversion_amount_w_tax").type) == "decimal128(38, 9)"
    assert table.column("loyalty_tier").to_pylist() == ["gold"]
    nested = catalogue.get("order_detail")
    page = dict_decoder(nested)(b'{"orderId": 1, "items": [{"lineNumber": 1}]}')
    assert page.records == [{"orderId": 1, "items": [{"lineNumber": 1}]}]


def test_paths_go_below_the_base_url_and_absolute_links_as_they_are():
    transport, seen = scripted([ok])
    client = IncomakerClient("https://api.test/v1/", TOKEN, transport=transport)
    client.get("segments", "/segments", {"offset": "0", "limit": "2"}, lambda body: body)
    client.get("segments", "https://other.test/v1/segments", {"page": "3"}, lambda body: body)
    assert [str(r.url) for r in seen] == [
        "https://api.test/v1/segments?offset=0&limit=2",
        "https://other.test/v1/segments?page=3",
    ]
    assert seen[0].headers["Accept"] == "application/json"
    assert "secret-token-123" not in repr(seen[0].headers)
    assert client.base_path == "/v1"


CONVERSIONS = default_catalogue().get("conversions")


def conversion(n: int, amount: object = "12.30") -> dict[str, Any]:
    return {
        "conversionId": n,
        "date": "2026-06-30",
        "createdAt": "2026-06-30T12:00:00+02:00",
        "conversionAmountWTax": amount,
    }


def pages_of(bodies: list[bytes]):
    """A transport answering the n-th page of 2 records with bodies[n]; the requests seen."""
    seen: list[httpx.Request] = []
    by_query = {
        tuple(sorted(CONVERSIONS.paging.params(n, 2).items())): body
        for n, body in enumerate(bodies)
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=by_query[tuple(sorted(request.url.params.items()))])

    return httpx.MockTransport(handler), seen


def test_pages_of_a_listing_are_decoded_together_as_each_alone_would_be():
    bodies = [
        page_body(CONVERSIONS, [conversion(2 * n), conversion(2 * n + 1)], 8, 2) for n in range(4)
    ]
    transport, _ = pages_of(bodies)
    client = IncomakerClient("http://api.test/v1", TOKEN, transport=transport)
    params = [CONVERSIONS.paging.params(n, 2) for n in range(1, 4)]
    decode = arrow_decoder(CONVERSIONS)
    [together] = client.get_many(CONVERSIONS.name, "/conversions", params, decode)
    alone = [decode(body) for body in bodies[1:]]
    assert together.pages == 3 and together.rows == 6
    assert together.records.to_pylist() == [r for page in alone for r in page.records.to_pylist()]
    assert client.requests == 3 and client.retries == 0


def test_a_group_with_an_odd_value_or_a_cut_body_is_decoded_page_by_page():
    odd = page_body(CONVERSIONS, [conversion(3, "1e400")], 8, 2)  # no decimal(38, 9) holds it
    good = page_body(CONVERSIONS, [conversion(5)], 8, 2)
    answers = iter([good, odd, good[:40], good])  # the cut body's page is fetched again
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=next(answers))

    client = IncomakerClient(
        "http://api.test/v1", TOKEN, transport=httpx.MockTransport(handler), max_in_flight=1
    )
    params = [CONVERSIONS.paging.params(n, 2) for n in range(1, 4)]
    pages = client.get_many(CONVERSIONS.name, "/conversions", params, arrow_decoder(CONVERSIONS))
    assert [page.pages for page in pages] == [1, 1, 1] and len(seen) == 4
    assert [page.rows for page in pages] == [1, 1, 1]
    assert pages[1].notes and pages[1].notes[0].field == "conversionAmountWTax"
    assert pages[1].records.column("conversion_amount_w_tax__raw").to_pylist() == ["1e400"]
    assert seen[3].url.params == seen[2].url.params, "the cut page was asked for again"
    assert client.requests == 4 and client.retries == 1
