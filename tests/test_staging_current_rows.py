"""The staging macros that decide which raw rows are current, on hand-made loads.

dlt merges on the key, so a record the API stopped returning stays in the raw table. The macros
in dbt_project/macros/staging.sql keep what the API still returns; here they are rendered with
plain Jinja (they use nothing of dbt's) and run on small tables whose loads say exactly which
rows a later fetch left out. tests/test_incremental_equals_full.py checks the same end to end.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import jinja2
import pytest

from incomaker_elt.orchestration.transform import DBT_PROJECT_DIR

MACROS = jinja2.Environment(extensions=["jinja2.ext.do"]).from_string(
    (DBT_PROJECT_DIR / "macros" / "staging.sql").read_text()
)


def macro(name: str, *args: Any) -> str:
    return str(getattr(MACROS.module, name)(*args))


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    yield connection
    connection.close()


def test_a_row_a_later_fetch_of_its_window_left_out_is_gone(con) -> None:
    # load 1 read days 1-10; load 2 read days 8-12 and no longer returned `j` (day 10); load 3, a
    # backfill, read days 2-3 and no longer returned `c` (day 3). `a` (day 1) nobody re-read.
    con.execute(
        """
        create table latest as select * from (values
            ('1.0', 'a', date '2026-06-01'), ('3.0', 'b', date '2026-06-02'),
            ('1.0', 'c', date '2026-06-03'), ('1.0', 'd', date '2026-06-04'),
            ('1.0', 'g', date '2026-06-07'), ('2.0', 'h', date '2026-06-08'),
            ('2.0', 'i', date '2026-06-09'), ('1.0', 'j', date '2026-06-10'),
            ('2.0', 'k', date '2026-06-11'), ('2.0', 'l', date '2026-06-12'),
            ('3.0', 'm', date '2026-06-03')
        ) as t(_dlt_load_id, _dlt_id, created_at)
        """
    )
    sql = macro("not_superseded_by_later_fetch", "latest", "created_at", [])
    kept = sorted(row[0] for row in con.execute(f"select _dlt_id from ({sql})").fetchall())
    assert kept == ["a", "b", "d", "g", "h", "i", "k", "l", "m"]


def test_windowed_rows_are_judged_per_parent_when_runs_fetch_some_parents(con) -> None:
    # load 2 fetched parent 1 only: parent 2's row of the same day stays.
    con.execute(
        """
        create table latest as select * from (values
            ('1.0', 'x', 1, date '2026-06-05'), ('1.0', 'y', 2, date '2026-06-05'),
            ('2.0', 'z', 1, date '2026-06-04'), ('2.0', 'w', 1, date '2026-06-06')
        ) as t(_dlt_load_id, _dlt_id, parent_id, created_at)
        """
    )
    sql = macro("not_superseded_by_later_fetch", "latest", "created_at", ["parent_id"])
    kept = sorted(row[0] for row in con.execute(f"select _dlt_id from ({sql})").fetchall())
    assert kept == ["w", "y", "z"]


def test_a_listing_fetched_whole_keeps_its_latest_fetch_only(con) -> None:
    con.execute(
        """
        create table latest as select * from (values
            ('1.0', 'gone', 1), ('2.0', 'kept', 1), ('1.0', 'other parent', 2)
        ) as t(_dlt_load_id, _dlt_id, parent_id)
        """
    )
    whole = macro("from_latest_fetch", "latest", [])
    per_parent = macro("from_latest_fetch", "latest", ["parent_id"])
    assert [r[0] for r in con.execute(f"select _dlt_id from ({whole})").fetchall()] == ["kept"]
    assert sorted(r[0] for r in con.execute(f"select _dlt_id from ({per_parent})").fetchall()) == [
        "kept",
        "other parent",
    ]


def test_the_latest_snapshot_is_what_it_returned_not_the_newest_row_per_key(con) -> None:
    # Cell 531 emptied by the second snapshot; a same-day re-run (load 3) no longer returned 222;
    # a later load of an older snapshot date (a backfill, load 4) is not the latest snapshot.
    con.execute(
        """
        create table snapshots as select * from (values
            ('1.0', date '2026-06-30', '111'), ('1.0', date '2026-06-30', '531'),
            ('2.0', date '2026-07-07', '222'), ('3.0', date '2026-07-07', '111'),
            ('4.0', date '2026-07-01', '111')
        ) as t(_dlt_load_id, _snapshot_date, cell)
        """
    )
    flag = macro("is_latest_snapshot", [])
    latest = con.execute(
        f"select cell, _snapshot_date from (select *, {flag} as latest from snapshots) where latest"
    ).fetchall()
    assert latest == [("111", date(2026, 7, 7))]
