"""The serving warehouse: a read-only copy of the marts that BI tools open.

DuckDB lets one process write a database file, and while it writes nobody else may open it, not
even to read. BI tools therefore never open the working warehouse. After a run has built the marts
and its blocking checks have passed, the marts (and staging, as tables) are copied into a new file
beside the serving warehouse, which then replaces it with one `os.replace`: a reader sees either
the previous complete copy or the new complete copy, never a lock and never half a run. A reader
that still has the old file open keeps reading it (on POSIX the old file lives on until closed).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

SERVED_SCHEMAS: tuple[str, ...] = ("marts", "staging")
"""Schemas published for BI: the marts users query, and staging for ad-hoc questions."""

PUBLICATION_TABLE = "main.publication"
"""One row saying when the copy was published and by which run, so dashboards can show 'as of'."""

_TMP_GLOB = ".{name}.*.tmp"
_STALE_TMP_SECONDS = 6 * 3600


class PublishError(RuntimeError):
    """The serving warehouse could not be published; the previous copy is left untouched."""


@dataclass(frozen=True)
class PublishedWarehouse:
    path: Path
    published_at: datetime
    tables: dict[str, int] = field(default_factory=dict)
    """Row count per published table, keyed `schema.table`."""

    @property
    def total_rows(self) -> int:
        return sum(self.tables.values())


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _relations(
    con: duckdb.DuckDBPyConnection, catalog: str, schemas: Sequence[str]
) -> list[tuple[str, str]]:
    rows = con.execute(
        """
        select table_schema, table_name
        from information_schema.tables
        where table_catalog = ? and table_schema in (select unnest(?::varchar[]))
        order by table_schema, table_name
        """,
        [catalog, list(schemas)],
    ).fetchall()
    return [(schema, name) for schema, name in rows]


def _remove_stale_temporaries(serving_path: Path) -> None:
    """A crashed publish leaves its temporary file behind; clear those older than a few hours."""
    cutoff = time.time() - _STALE_TMP_SECONDS
    for tmp in serving_path.parent.glob(_TMP_GLOB.format(name=serving_path.name)):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except FileNotFoundError:
            pass


def publish_serving_warehouse(
    warehouse_path: Path,
    serving_path: Path,
    *,
    schemas: Sequence[str] = SERVED_SCHEMAS,
    required_schemas: Sequence[str] = ("marts",),
    run_id: str | None = None,
) -> PublishedWarehouse:
    """Copy `schemas` of the warehouse into a fresh file and atomically replace `serving_path`.

    Every relation is copied as a table, views included: staging views select from raw tables that
    the serving copy does not hold. The working warehouse is attached read-only, so this must run
    when no other process writes it (the orchestration runs it in the DuckDB pool).
    """
    if not warehouse_path.is_file():
        raise PublishError(
            f"warehouse {warehouse_path} does not exist; run the pipeline before publishing"
        )
    serving_path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(serving_path)
    tmp_path = serving_path.with_name(f".{serving_path.name}.{uuid.uuid4().hex}.tmp")
    published_at = datetime.now(UTC)
    tables: dict[str, int] = {}
    try:
        con = duckdb.connect(str(tmp_path))
        try:
            con.execute(f"attach {_quote(str(warehouse_path))} as source (read_only)")
            relations = _relations(con, "source", schemas)
            present = {schema for schema, _ in relations}
            missing = [s for s in required_schemas if s not in present]
            if missing:
                raise PublishError(
                    f"warehouse {warehouse_path} has no relations in schema(s) "
                    f"{', '.join(missing)}; build the dbt models before publishing"
                )
            for schema in dict.fromkeys(schema for schema, _ in relations):
                con.execute(f"create schema {_quote(schema)}")
            for schema, name in relations:
                target = f"{_quote(schema)}.{_quote(name)}"
                con.execute(f"create table {target} as select * from source.{target}")
                (count,) = con.execute(f"select count(*) from {target}").fetchone()
                tables[f"{schema}.{name}"] = count
            con.execute("detach source")
            con.execute(
                f"create table {PUBLICATION_TABLE} as select ?::timestamptz as published_at, "
                "?::varchar as run_id, ?::varchar as source_warehouse",
                [published_at, run_id, warehouse_path.name],
            )
            con.execute("checkpoint")
        finally:
            con.close()
        # Read-only on disk too: a BI tool that forgets `read_only` cannot take the write lock.
        tmp_path.chmod(0o444)
        os.replace(tmp_path, serving_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        tmp_path.with_name(tmp_path.name + ".wal").unlink(missing_ok=True)
        raise
    return PublishedWarehouse(path=serving_path, published_at=published_at, tables=tables)


def read_published_tables(serving_path: Path) -> dict[str, int]:
    """Row count per table of the serving warehouse, opened read-only as a BI tool would."""
    con = duckdb.connect(str(serving_path), read_only=True)
    try:
        relations = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema <> 'main' order by 1, 2"
        ).fetchall()
        return {
            f"{schema}.{name}": con.execute(
                f"select count(*) from {_quote(schema)}.{_quote(name)}"
            ).fetchone()[0]
            for schema, name in relations
        }
    finally:
        con.close()
