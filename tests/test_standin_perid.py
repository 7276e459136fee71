"""Per-id operations answered from indexes give the bytes the one-id queries give."""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import orjson
import pytest
from api_pages import all_records, page_params, records_of

from incomaker_elt.contract.catalogue import Operation, default_catalogue
from incomaker_elt.standin import StandIn
from incomaker_elt.standin.dialect import integer_id, to_uuid
from incomaker_elt.standin.service import Reply

CATALOGUE = default_catalogue()
PER_ID = [op for op in CATALOGUE if op.parent]
HEADERS = {"Authorization": "Bearer standin-token"}


def get(standin: StandIn, path: str, query: list[tuple[str, str]], **headers: str) -> Reply:
    return standin.handle("GET", path, query, {**HEADERS, **headers})


def parent_values(standin: StandIn, op: Operation) -> list[Any]:
    """Every value of the parent field feeding `op`, sorted."""
    assert op.parent is not None
    records = every_record(standin, CATALOGUE.get(op.parent.resource))
    return sorted({r[op.parent.field] for r in records if r[op.parent.field] is not None})


def every_record(standin: StandIn, op: Operation) -> list[dict[str, Any]]:
    """All records of an operation; of a per-id one, those of every parent value."""
    if op.parent is None:
        return all_records(standin, op, 1000)
    records = []
    for value in parent_values(standin, op):
        if op.parent.into in op.path_params:
            path, params = op.url_path(**{op.parent.into: value}), {}
        else:
            path, params = op.path, {op.parent.into: value}
        records += all_records(standin, op, 1000, path, **params)
    return records


def requests(op: Operation, values: list[Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(path, query) for each value: the whole first page, a later small page, and a window."""
    assert op.parent is not None
    queries: list[list[tuple[str, str]]] = [[]]
    if op.is_paged:
        queries = [list(page_params(op, 0, 1000).items()), list(page_params(op, 1, 7).items())]
    if "dateFrom" in op.params:
        queries.append([*queries[0], ("dateFrom", "2026-01-01"), ("dateTo", "2026-03-31")])
    out = []
    for value in values:
        for query in queries:
            if op.parent.into in op.path_params:
                out.append((op.url_path(**{op.parent.into: value}), query))
            else:
                out.append((op.path, [*query, (op.parent.into, str(value))]))
    return out


@pytest.fixture(scope="module")
def pair(small_world) -> tuple[StandIn, StandIn]:
    """An indexed stand-in and one running a query per request, on the same world."""
    return StandIn(small_world), StandIn(small_world, per_id_index=False)


def sample(op: Operation, values: list[Any]) -> list[Any]:
    """First, second, a middle and the last value, and one that does not exist."""
    assert op.parent is not None
    field, last = op.parent.field, values[-1]
    if isinstance(last, int):
        missing: Any = last + 1000
    elif (number := integer_id(field, last)) is not None:  # a UUID id
        missing = to_uuid(field, number + 1000)
    else:  # an RFM cell code
        missing = "155"
    chosen = [values[0], values[1 % len(values)], values[len(values) // 2], values[-1], missing]
    return list(dict.fromkeys(chosen))


@pytest.mark.parametrize("op", PER_ID, ids=lambda op: op.name)
def test_per_id_answers_equal_the_one_id_query(pair: tuple[StandIn, StandIn], op: Operation):
    indexed, direct = pair
    values = parent_values(direct, op)
    assert len(values) >= 2, op.name
    assert op.parent is not None
    if op.parent.batch:  # a list of ids in any order, duplicates, unknown ids
        batch = ",".join(str(v) for v in [*values[:40:-1], values[3], values[3], 99_999_999])
        cases = [(op.path, [(op.parent.into, batch)])]
    else:
        cases = requests(op, sample(op, values))
    answered = 0
    for path, query in cases:
        expected = get(direct, path, query)
        got = get(indexed, path, query)
        assert (got.status, got.body) == (expected.status, expected.body), (path, query)
        answered += expected.status == 200 and expected.body not in (b"", b"{}")
    assert answered, f"{op.name}: nothing but errors compared"


def test_drift_and_another_today_equal_the_one_id_query(small_world) -> None:
    indexed, direct = StandIn(small_world), StandIn(small_world, per_id_index=False)
    for standin in (indexed, direct):
        standin.set_today(date(2026, 2, 15))
    for op in PER_ID:
        values = parent_values(direct, op)[:3]
        for path, query in requests(op, values)[:2]:
            for headers in ({}, {"X-Standin-Fault": "drift"}):
                expected = get(direct, path, query, **headers)
                got = get(indexed, path, query, **headers)
                assert (got.status, got.body) == (expected.status, expected.body), (path, headers)


def test_moving_today_does_not_serve_the_old_index(small_world) -> None:
    standin = StandIn(small_world, today=date(2026, 3, 31))
    direct = StandIn(small_world, today=date(2026, 3, 31), per_id_index=False)
    op = CATALOGUE.get("product_purchases")
    path, query = op.url_path(productId=1), list(page_params(op, 0, 1000).items())
    before = get(standin, path, query).body
    for s in (standin, direct):
        s.set_today(date(2026, 6, 30))
    after = get(standin, path, query).body
    assert after == get(direct, path, query).body
    assert len(records_of(op, orjson.loads(after))) > len(records_of(op, orjson.loads(before)))


def test_parallel_requests_build_a_block_once(small_world, monkeypatch) -> None:
    standin = StandIn(small_world)
    built = []
    index = standin._index

    def counting(*args: Any) -> Any:
        built.append(args)
        return index(*args)

    monkeypatch.setattr(standin, "_index", counting)
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: statuses.append(get(standin, f"/orders/{i}", []).status)
        )
        for i in range(1, 9)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert len(built) == 1
