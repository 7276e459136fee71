"""The serving warehouse: a complete, read-only copy, replaced atomically, never locked by a run."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import duckdb
import pytest

from incomaker_elt.orchestration.serving import PublishError, publish_serving_warehouse


def read_published_tables(serving_path: Path) -> dict[str, int]:
    """Row count per table of the serving warehouse, opened read-only as a BI tool would."""
    with duckdb.connect(str(serving_path), read_only=True) as con:
        relations = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema <> 'main' order by 1, 2"
        ).fetchall()
        count = 'select count(*) from "{}"."{}"'
        return {
            f"{schema}.{name}": con.execute(count.format(schema, name)).fetchone()[0]
            for schema, name in relations
        }


def _make_warehouse(path: Path, orders: int) -> None:
    """A warehouse shaped like ours: raw tables, staging views over them, mart tables."""
    con = duckdb.connect(str(path))
    con.execute("create schema if not exists incomaker_raw")
    con.execute("create schema if not exists staging")
    con.execute("create schema if not exists marts")
    con.execute(
        "create or replace table incomaker_raw.orders as "
        f"select range as order_id, 'CZK' as currency from range({orders})"
    )
    con.execute(
        "create or replace view staging.stg_incomaker__orders as "
        "select order_id, currency from incomaker_raw.orders"
    )
    con.execute(
        "create or replace table marts.conversion_totals as "
        "select currency, count(*) as conversions from incomaker_raw.orders group by currency"
    )
    con.execute(
        "create or replace table marts.fct_conversions as select * from incomaker_raw.orders"
    )
    con.close()


def test_publish_copies_marts_and_staging_as_tables(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    _make_warehouse(warehouse, orders=7)

    published = publish_serving_warehouse(warehouse, serving, run_id="run-1")

    assert published.path == serving
    assert published.tables == {
        "marts.conversion_totals": 1,
        "marts.fct_conversions": 7,
        "staging.stg_incomaker__orders": 7,
    }
    assert read_published_tables(serving) == published.tables
    con = duckdb.connect(str(serving), read_only=True)
    try:
        # The staging view became a table: the raw schema it selected from is not published.
        kinds = dict(
            con.execute(
                "select table_name, table_type from information_schema.tables "
                "where table_schema = 'staging'"
            ).fetchall()
        )
        assert kinds == {"stg_incomaker__orders": "BASE TABLE"}
        schemas = {r[0] for r in con.execute("select schema_name from duckdb_schemas()").fetchall()}
        assert "incomaker_raw" not in schemas
        assert con.execute("select run_id from main.publication").fetchone() == ("run-1",)
    finally:
        con.close()
    assert not stat.S_IMODE(serving.stat().st_mode) & 0o222, "serving copy must be read-only"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_republish_replaces_the_copy(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    _make_warehouse(warehouse, orders=3)
    publish_serving_warehouse(warehouse, serving)

    reader = duckdb.connect(str(serving), read_only=True)
    _make_warehouse(warehouse, orders=5)
    publish_serving_warehouse(warehouse, serving)

    # A reader that opened the old copy keeps a consistent view of it; new readers see the new one.
    assert reader.execute("select count(*) from marts.fct_conversions").fetchone() == (3,)
    reader.close()
    assert read_published_tables(serving)["marts.fct_conversions"] == 5


def test_missing_marts_leave_the_previous_copy_untouched(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    _make_warehouse(warehouse, orders=4)
    publish_serving_warehouse(warehouse, serving)
    before = serving.stat().st_ino

    con = duckdb.connect(str(warehouse))
    con.execute("drop schema marts cascade")
    con.close()
    with pytest.raises(PublishError, match="marts"):
        publish_serving_warehouse(warehouse, serving)

    assert serving.stat().st_ino == before
    assert read_published_tables(serving)["marts.fct_conversions"] == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_missing_warehouse_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        publish_serving_warehouse(tmp_path / "nope.duckdb", tmp_path / "serving.duckdb")


def _read_in_a_loop(serving: str, stop: multiprocessing.synchronize.Event, out) -> None:
    reads, errors = 0, []
    while not stop.is_set():
        try:
            con = duckdb.connect(serving, read_only=True)
            try:
                for table in ("conversion_totals", "fct_conversions"):
                    con.execute(f"select count(*) from marts.{table}").fetchone()
            finally:
                con.close()
            reads += 1
        except Exception as exc:  # every failure is a finding: lock error or a missing mart
            errors.append(f"{type(exc).__name__}: {exc}")
    out.put((reads, errors[:5]))


def test_a_reader_in_another_process_never_fails_while_publishing(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    _make_warehouse(warehouse, orders=1000)
    publish_serving_warehouse(warehouse, serving)

    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_read_in_a_loop, args=(str(serving), stop, out))
    reader.start()
    try:
        for orders in range(1, 16):
            # The run writes the working warehouse while the reader reads the serving copy.
            _make_warehouse(warehouse, orders=orders * 100)
            publish_serving_warehouse(warehouse, serving)
    finally:
        stop.set()
        reads, errors = out.get(timeout=60)
        reader.join(timeout=30)
    assert errors == []
    assert reads > 10, f"the reader only managed {reads} reads"
    assert os.access(serving, os.R_OK)
