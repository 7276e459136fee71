"""One-record answers (a detail per id) are read many at a time, and land as if read one by one.

`records.OneRecordBodies` keeps the bodies of an operation such as `rfm_contact_detail` and reads
them together; these tests check that the records, their types and the notes on odd values are
those of `arrow_decoder` reading each body alone, that a batch with an odd value falls back to
that, and that `Fetcher.many_listings` still retries a broken body and counts every answer.
"""

from __future__ import annotations

import threading

import httpx
import orjson
import pyarrow as pa
import pytest

from incomaker_elt.contract.catalogue import default_catalogue
from incomaker_elt.ingestion.client import IncomakerClient, RetryPolicy
from incomaker_elt.ingestion.fetch import ONE_RECORD_BATCH, ArrowChunks, Fetcher
from incomaker_elt.ingestion.records import arrow_decoder, one_record_bodies

CATALOGUE = default_catalogue()
DETAIL = CATALOGUE.get("rfm_contact_detail")


def detail(contact: int, monetary: str = "13357.48") -> bytes:
    body = (
        f'{{"contactId":{contact},"analysisDate":"2026-06-30","hasOrders":true,'
        f'"recencyDays":{contact % 300},"frequency":2,"monetary":{monetary},"r":1,"f":2,'
        f'"m":4,"cell":"124","segment":"Lost","firstOrderAt":"2026-01-22T02:39:48+01:00",'
        f'"lastOrderAt":"2026-03-01T10:00:00.123456Z"}}'
    )
    return body.encode()


def alone(bodies: list[bytes]) -> pa.Table:
    decode = arrow_decoder(DETAIL)
    chunks = ArrowChunks(10**9)
    for body in bodies:
        chunks.add(decode(body).records)
    table = chunks.flush()
    assert table is not None
    return table


def together(bodies: list[bytes]) -> tuple[pa.Table, list]:
    reader = one_record_bodies(DETAIL)
    assert reader is not None
    kept = [reader.accept(body) for body in bodies]
    assert all(isinstance(k, bytes) for k in kept)
    pages = reader.decode(kept)  # type: ignore[arg-type]
    chunks = ArrowChunks(10**9)
    for page in pages:
        chunks.add(page.records)
    table = chunks.flush()
    assert table is not None
    return table, [note for page in pages for note in page.notes]


def test_only_flat_unpaged_details_that_are_not_aggregates_are_read_together():
    together_ = {op.name for op in CATALOGUE if one_record_bodies(op) is not None}
    assert together_ == {"rfm_contact_detail", "product_detail"}


def test_bodies_read_together_are_the_records_read_one_by_one():
    bodies = [detail(n) for n in range(1, 301)]
    bodies[7] = detail(8, monetary="null")
    table, notes = together(bodies)
    assert table.equals(alone(bodies))
    assert table.schema.field("monetary").type == pa.decimal128(38, 9)
    assert table.schema.field("analysis_date").type == pa.date32()
    assert notes == []


def test_a_value_that_does_not_fit_falls_back_to_one_by_one_with_its_note():
    bodies = [detail(n) for n in range(1, 51)]
    bodies[20] = detail(21, monetary="1.0123456789012")  # more places than DECIMAL(38, 9)
    table, notes = together(bodies)
    assert table.num_rows == 50
    expected = alone(bodies)
    assert table.equals(expected)
    assert "monetary__raw" in table.column_names
    assert table.column("monetary__raw").to_pylist()[20] == "1.0123456789012"
    assert [(n.field, n.count) for n in notes] == [("monetary", 1)]


def test_a_pretty_printed_or_listed_body_is_decoded_alone_at_once():
    reader = one_record_bodies(DETAIL)
    assert reader is not None
    pretty = orjson.dumps(orjson.loads(detail(3)), option=orjson.OPT_INDENT_2)
    page = reader.accept(pretty)
    assert not isinstance(page, bytes)
    assert page.records.equals(arrow_decoder(DETAIL)(detail(3)).records)


def test_a_body_with_whitespace_around_it_is_read_as_without():
    compact = detail(5)
    decode = arrow_decoder(DETAIL)
    reader = one_record_bodies(DETAIL)
    assert reader is not None
    for padded in (b"\n " + compact, compact + b"\r\n", b"\t" + compact + b" "):
        assert decode(padded).records.equals(decode(compact).records)
        assert reader.accept(padded) == compact


def test_many_listings_retries_a_broken_body_and_counts_every_answer():
    contacts = list(range(1, ONE_RECORD_BATCH + 123))
    broken_once = {17, 1500}
    served: dict[int, int] = {}
    lock = threading.Lock()

    def answer(request: httpx.Request) -> httpx.Response:
        contact = int(request.url.path.rsplit("/", 1)[1])
        with lock:
            served[contact] = served.get(contact, 0) + 1
            first = served[contact] == 1
        body = detail(contact)
        if contact in broken_once and first:
            body = body[: len(body) // 2]  # cut short: not JSON
        return httpx.Response(200, content=body)

    client = IncomakerClient(
        "http://api.invalid",
        "token",
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(backoff_base=0.0),
        sleep=lambda _: None,
    )
    fetcher = Fetcher(client, page_size=100, concurrency=4)
    requests = [(DETAIL.url_path(contactId=c), {}, {"contactId": str(c)}) for c in contacts]
    try:
        yielded = list(fetcher.many_listings(DETAIL, requests, arrow_decoder(DETAIL)))
    finally:
        fetcher.close()
        client.close()
    pages = [page for _, listing in yielded for page in listing]
    assert len(pages) == 2  # a full batch, then the rest
    ids = sorted(i for page in pages for i in page.records.column("contact_id").to_pylist())
    assert ids == contacts
    assert client.retries == len(broken_once)
    progress = fetcher.progress.operations[DETAIL.name]
    assert (progress.pages, progress.rows) == (len(contacts), len(contacts))


@pytest.mark.parametrize("name", ["rfm_cell_detail", "delivery_detail", "order_detail", "orders"])
def test_aggregates_nested_and_paged_operations_are_read_alone(name):
    assert one_record_bodies(CATALOGUE.get(name)) is None
