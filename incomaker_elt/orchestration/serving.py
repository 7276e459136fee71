"""The serving warehouse: a read-only copy of the marts that BI tools open.

DuckDB lets one process write a database file, and while it writes nobody else may open it, not
even to read. BI tools therefore never open the working warehouse. After a run has built the marts
and its blocking checks have passed, the marts (and staging, as tables) are copied into a new file
beside the serving warehouse, which then replaces it with one `os.replace`: a reader sees either
the previous complete copy or the new complete copy, never a lock and never half a run. A reader
that still has the old file open keeps reading it (on POSIX the old file lives on until closed).

The new file is checkpointed (no `.wal` beside it), closed and flushed to disk before the
replace. A publish killed half-way leaves only its temporary files (`.<name>.<id>.tmp` and
`.tmp.wal`); the next publish holds the publishing lock (`.<name>.publish.lock`), so every
temporary file of that name it finds belongs to a dead publish, and removes it first (with the
folder `.<name>.<id>.tmp.tmp` where DuckDB spills what does not fit in memory).

The copy is written in the storage format of an older DuckDB (`storage_version`, from
INCOMAKER_SERVING_STORAGE_VERSION), not in the installed DuckDB's newest: BI tools bundle their
own DuckDB, often a 1.x that cannot open a file in DuckDB 2.0's format.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from incomaker_elt.contract.settings import DEFAULT_SERVING_STORAGE_VERSION
from incomaker_elt.orchestration.warehouse import retry_while_locked

SERVED_SCHEMAS: tuple[str, ...] = ("marts", "staging")
"""Schemas published for BI: the marts users query, and staging for ad-hoc questions."""

PUBLICATION_TABLE = "main.publication"
"""One row saying when the copy was published and by which run, so dashboards can show 'as of'."""

_TMP_GLOBS = (".{name}.*.tmp", ".{name}.*.tmp.wal")

try:
    import fcntl
except ImportError:  # Windows: publishes are serialised by the warehouse lock only
    fcntl = None  # type: ignore[assignment]


class PublishError(RuntimeError):
    """The serving warehouse could not be published; the previous copy is left untouched."""


@dataclass(frozen=True)
class PublishedWarehouse:
    path: Path
    published_at: datetime
    tables: dict[str, int] = field(default_factory=dict)
    """Row count per published table, keyed `schema.table`."""
    storage_version: str = DEFAULT_SERVING_STORAGE_VERSION
    """The DuckDB storage format written: the oldest DuckDB that opens the copy (or `latest`)."""

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


@contextmanager
def _publishing(serving_path: Path) -> Iterator[None]:
    """One publish of `serving_path` at a time, across processes; the OS frees it on death."""
    if fcntl is None:
        yield
        return
    with open(serving_path.with_name(f".{serving_path.name}.publish.lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def leftover_temporaries(serving_path: Path) -> list[Path]:
    """Temporary files of publishes of `serving_path` (ours by name only)."""
    return sorted(
        tmp
        for pattern in _TMP_GLOBS
        for tmp in serving_path.parent.glob(pattern.format(name=serving_path.name))
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a DuckDB version such as `v1.4.0` or `2.0.1.dev12`."""
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if match is None:
        raise PublishError(f"cannot tell the DuckDB release of version {version!r}")
    return int(match[1]), int(match[2])


PUBLISH_MEMORY_LIMIT = "1GB"
"""DuckDB's memory limit while the serving copy is written (its default is 80% of the RAM)."""


def writable_storage_version(requested: str) -> str:
    """`requested`, or `latest` when the installed DuckDB is older than it.

    A DuckDB writes the formats of its own and earlier releases only; its newest format is then
    still read by every DuckDB from `requested` on, which is what the setting asks for.
    """
    if requested == "latest" or _release(duckdb.__version__) < _release(requested):
        return "latest"
    return requested


def _copy_relation(
    con: duckdb.DuckDBPyConnection, schema: str, name: str, storage_version: str
) -> int:
    target = f"{_quote(schema)}.{_quote(name)}"
    try:
        con.execute(f"create table {target} as select * from source.{target}")
    except duckdb.InvalidInputException as exc:
        if "storage version" not in str(exc):
            raise
        # A column type newer than the format (VARIANT needs v1.5.0): say which and what to do.
        raise PublishError(
            f"{schema}.{name} cannot be written in the storage format of DuckDB "
            f"{storage_version} ({exc}); set INCOMAKER_SERVING_STORAGE_VERSION to a newer "
            "version (docs/serving.md) or cast the column in the model"
        ) from None
    (count,) = con.execute(f"select count(*) from {target}").fetchone()
    return int(count)


def _sync(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_serving_warehouse(
    warehouse_path: Path,
    serving_path: Path,
    *,
    run_id: str | None = None,
    storage_version: str = DEFAULT_SERVING_STORAGE_VERSION,
) -> PublishedWarehouse:
    """Copy the served schemas into a fresh file and atomically replace `serving_path`.

    Every relation is copied as a table, views included: staging views select from raw tables that
    the serving copy does not hold. The working warehouse is attached read-only, so this must run
    when no other process writes it (the orchestration runs it in the DuckDB pool). The file is
    written in the storage format of DuckDB `storage_version` (`v1.4.0`: DuckDB 1.4 and newer
    open it), see writable_storage_version().
    """
    if not warehouse_path.is_file():
        raise PublishError(
            f"warehouse {warehouse_path} does not exist; run the pipeline before publishing"
        )
    serving_path.parent.mkdir(parents=True, exist_ok=True)
    published_at = datetime.now(UTC)
    written_version = writable_storage_version(storage_version)
    with _publishing(serving_path):
        # Under the publishing lock any temporary file is a killed publish's: remove them all.
        for tmp in leftover_temporaries(serving_path):
            _remove(tmp)
        tmp_path = serving_path.with_name(f".{serving_path.name}.{uuid.uuid4().hex}.tmp")
        wal_path = tmp_path.with_name(tmp_path.name + ".wal")
        spill_path = tmp_path.with_name(tmp_path.name + ".tmp")
        tables: dict[str, int] = {}
        try:
            # The setting applies to the database this connection creates: the new file itself.
            # The memory limit makes DuckDB write the copied blocks out (spilling to spill_path if
            # need be) instead of keeping them: at `large` after five nights, 24.2M rows, the peak
            # was 4.9 GB without it and 1.1 GB with it (73 s against 58 s, a busy machine).
            config = {
                "storage_compatibility_version": written_version,
                "memory_limit": PUBLISH_MEMORY_LIMIT,
            }
            with duckdb.connect(str(tmp_path), config=config) as con:
                attach = f"attach {_quote(str(warehouse_path))} as source (read_only)"
                retry_while_locked(lambda: con.execute(attach), warehouse_path)
                relations = _relations(con, "source", SERVED_SCHEMAS)
                if "marts" not in {schema for schema, _ in relations}:
                    raise PublishError(
                        f"warehouse {warehouse_path} has no relations in schema(s) marts; "
                        "build the dbt models before publishing"
                    )
                for schema in dict.fromkeys(schema for schema, _ in relations):
                    con.execute(f"create schema {_quote(schema)}")
                for schema, name in relations:
                    tables[f"{schema}.{name}"] = _copy_relation(con, schema, name, written_version)
                con.execute("detach source")
                con.execute(
                    f"create table {PUBLICATION_TABLE} as select ?::timestamptz as published_at, "
                    "?::varchar as run_id, ?::varchar as source_warehouse, "
                    "?::varchar as storage_version",
                    [published_at, run_id, warehouse_path.name, written_version],
                )
                con.execute("checkpoint")
            if wal_path.exists():
                raise PublishError(
                    f"the serving copy {tmp_path} still has a write-ahead log after its "
                    "checkpoint; nothing was published, run again"
                )
            # The bytes on disk before the name points at them, then the new name itself: a power
            # cut cannot leave a serving file that names data never written.
            _sync(tmp_path)
            # Read-only on disk too: a BI tool that forgets `read_only` cannot take the write lock.
            tmp_path.chmod(0o444)
            os.replace(tmp_path, serving_path)
            if os.name == "posix":
                _sync(serving_path.parent)
        except BaseException:
            for leftover in (tmp_path, wal_path, spill_path):
                _remove(leftover)
            raise
    return PublishedWarehouse(
        path=serving_path,
        published_at=published_at,
        tables=tables,
        storage_version=written_version,
    )
