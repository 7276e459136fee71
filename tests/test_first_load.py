"""A first load appends: a table that is absent or empty gets its rows without dlt's merge.

Merging into nothing costs a staging copy and a merge statement for every table (over a third of
the load step at `large`). What must hold all the same: a key the listing repeats is kept once, a
later run merges, and a first load killed in its load step ends exact after the next run, as
every other load does.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import duckdb
import httpx
import orjson
from api_pages import standin_settings
from dlt.destinations.exceptions import DatabaseTerminalException
from killed_runs import ingest_killed_after

from incomaker_elt.contract.catalogue import default_catalogue
from incomaker_elt.contract.settings import RAW_DATASET, Settings
from incomaker_elt.ingestion.pipeline import first_loads, make_pipeline, run_ingestion
from incomaker_elt.ingestion.raw_columns import has_nested_lists, primary_key
from incomaker_elt.standin import DEFAULT_TODAY, StandIn

CATALOGUE = default_catalogue()
TOKEN = "standin-token"
OPERATION = "contacts"
"""An entity listing without nested lists (the Arrow path), merged on its key after a first load."""


class RepeatingFirstRecord(httpx.BaseTransport):
    """The stand-in, with every page of one listing holding its first record twice."""

    def __init__(self, inner: httpx.BaseTransport, path: str) -> None:
        self.inner = inner
        self.path = path
        self.repeated = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith(self.path) or response.status_code != 200:
            return response
        body = orjson.loads(response.read())
        records = body[CATALOGUE.get(OPERATION).records_path]
        if len(records) > 1:
            records.append(records[0])
            self.repeated += 1
        return httpx.Response(200, content=orjson.dumps(body), headers=response.headers)


def recorded_disposition(settings: Settings, table: str) -> str:
    """The write disposition dlt recorded for the table with the last load."""
    return make_pipeline(settings).default_schema.tables[table]["write_disposition"]


def rows_and_keys(warehouse: Path, table: str) -> tuple[int, int]:
    """The table's rows and its distinct primary keys."""
    key = ", ".join(primary_key(CATALOGUE.get(table)))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            f'select count(*), count(distinct ({key})) from {RAW_DATASET}."{table}"'
        ).fetchone()


def test_a_first_load_appends_keeps_a_repeated_key_once_and_the_next_run_merges(
    small_world, tmp_path
):
    assert not has_nested_lists(CATALOGUE.get(OPERATION))
    standin = StandIn(small_world, token=TOKEN)
    settings = standin_settings(tmp_path, TOKEN)
    repeating = RepeatingFirstRecord(standin.transport(), f"/{OPERATION}")

    first = run_ingestion(settings, only=[OPERATION], end=DEFAULT_TODAY, transport=repeating)
    assert recorded_disposition(settings, OPERATION) == "append"
    assert repeating.repeated > 0
    assert first.duplicates_removed == {OPERATION: repeating.repeated}
    rows, keys = rows_and_keys(settings.warehouse_path, OPERATION)
    assert rows == keys == first.rows_loaded[OPERATION] - repeating.repeated

    second = run_ingestion(
        settings, only=[OPERATION], end=DEFAULT_TODAY, transport=standin.transport()
    )
    assert recorded_disposition(settings, OPERATION) == "merge"
    assert second.rows_loaded[OPERATION] > 0  # the window's lookback, read again: merged
    assert rows_and_keys(settings.warehouse_path, OPERATION) == (keys, keys)


class _NoLimitSql:
    """A destination whose SQL has no `limit` (SQL Server says `top`), holding `tables`."""

    dataset_name = RAW_DATASET

    def __init__(self, tables: set[str]) -> None:
        self.tables = tables

    def make_qualified_table_name(self, name: str) -> str:
        return f"{RAW_DATASET}.{name}"

    @contextmanager
    def execute_query(self, query: str, *args: object) -> Iterator[object]:
        if "information_schema" not in query:
            raise DatabaseTerminalException(Exception("Incorrect syntax near 'limit'."))
        rows = [(name,) for name in sorted(self.tables)]
        yield SimpleNamespace(fetchall=lambda: rows)


def test_a_destination_that_cannot_be_asked_whether_a_table_is_empty_merges_into_it():
    sql = _NoLimitSql({"contacts"})
    pipeline = SimpleNamespace(sql_client=lambda: nullcontext(sql))
    operations = [CATALOGUE.get("contacts"), CATALOGUE.get("orders")]
    assert first_loads(pipeline, operations) == {"orders"}  # absent: nothing to merge with


def _ingest(base_url: str, warehouse: Path, kill_after: int) -> subprocess.CompletedProcess:
    """`incomaker-elt ingest --only contacts`, killed after that many load statements."""
    arguments = ["--only", OPERATION, "--end-date", DEFAULT_TODAY.isoformat()]
    return ingest_killed_after(base_url, TOKEN, warehouse, kill_after, arguments)


def test_a_first_load_killed_in_its_load_step_ends_exact_after_the_next_run(small_world, tmp_path):
    standin = StandIn(small_world, token=TOKEN)
    with standin.serve(host="127.0.0.1", port=0) as base_url:
        whole = tmp_path / "whole" / "incomaker.duckdb"
        run = _ingest(base_url, whole, 0)
        assert run.returncode == 0, run.stderr
        statements = int(re.search(r"load statements: (\d+)", run.stderr).group(1))
        expected = rows_and_keys(whole, OPERATION)
        assert expected[0] == expected[1] > 0

        killed = []
        for point in sorted({max(1, statements * eighths // 8) for eighths in (2, 5)}):
            warehouse = tmp_path / f"killed_at_{point}" / "incomaker.duckdb"
            if _ingest(base_url, warehouse, point).returncode != -signal.SIGKILL:
                continue
            killed.append(point)
            settings = dataclasses.replace(
                standin_settings(warehouse.parent, TOKEN),
                warehouse_path=warehouse,
                base_url=base_url,
            )
            summary = run_ingestion(settings, only=[OPERATION], end=DEFAULT_TODAY)
            assert summary.leftovers.any, f"killed at {point}: the next run found nothing left"
            assert rows_and_keys(warehouse, OPERATION) == expected, f"killed at {point}"
        assert killed, f"no kill point of {statements} statements was reached"
