"""Loads that did not finish, and the repair after every load.

dlt keeps what a run extracted as load packages in its working folder until the warehouse has
them. A run that died (kill -9, power cut) or whose load step failed leaves packages behind, and
they block every later run until they are dealt with. This module deals with them through dlt's
own API, never by touching its folder:

- `settle_leftovers` runs before a run fetches anything. It completes what an earlier run left
  (dlt replays the interrupted jobs, then `repair` removes the copies the replay made) or, when
  the package cannot load, aborts it: dlt rewinds the pipeline state (cursors, fingerprints) and
  the schema to where the package started, so this run fetches that data again.
- `load_pending` normalises and loads what one extract produced; when the load fails it aborts
  the package the same way and says which tables got rows of it before the failure.
- `repair` keeps exactly one copy of every row: a replayed job inserts its rows again with the
  same `_dlt_id`, and a listing that shifted while it was paged repeats a record under a new one.
  Child rows are deduplicated too, and child rows whose parent row is gone are removed.

Every table is merged by its key (delete-insert), so rows a failed package did commit are real
records that the next fetch of the same window replaces: harmless, and reported. Tables each run
replaces (catalogue `history: latest`) go through dlt's staging dataset and are swapped in one
transaction: a package that failed either replaced the table whole (a complete snapshot, counted
as committed) or left the previous snapshot; the next run replaces it again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dlt
from dlt.common.storages.load_package import ParsedLoadJobFileName
from dlt.pipeline.exceptions import PipelineStepFailed

from incomaker_elt.contract.catalogue import Operation
from incomaker_elt.ingestion.raw_columns import primary_key

log = logging.getLogger(__name__)


class LoadFailed(Exception):
    """Packages could not be loaded and were aborted.

    `failed_tables` names the tables whose load jobs failed (empty when the failure was not a
    table's, e.g. the warehouse was unreachable); `committed` counts the rows the packages had
    written before the failure.
    """

    def __init__(
        self,
        reason: str,
        load_ids: Sequence[str],
        committed: dict[str, int],
        failed_tables: Sequence[str] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.load_ids = list(load_ids)
        self.committed = committed
        self.failed_tables = list(failed_tables)


@dataclass
class Leftovers:
    """What earlier runs left pending and what this run did with it."""

    completed: list[str] = field(default_factory=list)
    """Load ids this run finished loading."""
    dropped: list[str] = field(default_factory=list)
    """Load ids this run aborted; their operations fetch that data again (cursors rewound)."""
    tables: dict[str, int] = field(default_factory=dict)
    """Rows of the completed packages per table, after the repair."""
    partial: dict[str, int] = field(default_factory=dict)
    """Rows the dropped packages had committed before they failed (kept, merged by key)."""
    reason: str | None = None
    """Why the dropped packages could not be loaded."""

    @property
    def any(self) -> bool:
        return bool(self.completed or self.dropped)

    def describe(self) -> str:
        """One paragraph for the run summary; empty when nothing was left over."""
        parts: list[str] = []
        if self.completed:
            tables = ", ".join(sorted(self.tables)) or "no data tables"
            parts.append(
                f"completed {len(self.completed)} load package(s) an earlier run left unfinished "
                f"({', '.join(self.completed)}; tables {tables})"
            )
        if self.dropped:
            text = (
                f"dropped {len(self.dropped)} load package(s) an earlier run could not load "
                f"({', '.join(self.dropped)}): {self.reason}; their cursors were rewound, so "
                "the operations they held fetch that data again (this run, if selected)"
            )
            if self.partial:
                text += f" (rows they had committed, replaced by key: {_counts(self.partial)})"
            parts.append(text)
        return "; ".join(parts)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {rows:,}" for table, rows in sorted(counts.items()))


def pending_load_ids(pipeline: dlt.Pipeline) -> list[str]:
    """Packages extracted or normalised but not yet loaded, oldest first."""
    ids = set(pipeline.list_extracted_load_packages()) | set(
        pipeline.list_normalized_load_packages()
    )
    return sorted(ids)


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line: the database's or the source's own words, not dlt's."""
    step = f"dlt's {exc.step} step" if isinstance(exc, PipelineStepFailed) else "load"
    cause: BaseException = exc
    seen: set[int] = set()
    while id(cause) not in seen:
        seen.add(id(cause))
        deeper = (
            getattr(cause, "client_exception", None)
            or getattr(cause, "exception", None)
            or cause.__cause__
        )
        if not isinstance(deeper, BaseException):
            break
        cause = deeper
    lines = [line.strip() for line in str(cause).splitlines()]
    first = next((line for line in lines if line and not line.startswith("Traceback")), "")
    return f"{step} failed: {type(cause).__name__}: {first[:400]}"


@dataclass
class Loaded:
    """Packages one `load_pending` call loaded, the rows normalised into each table, and the
    rows `repair` removed."""

    load_ids: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)


def _failed_tables(
    pipeline: dlt.Pipeline, load_ids: Sequence[str], exc: BaseException
) -> list[str]:
    """Tables whose load jobs failed: from the packages' retried jobs and the exception."""
    tables: set[str] = set()
    for load_id in pipeline.list_normalized_load_packages():
        if load_id in load_ids:
            for job_file, _ in pipeline.list_pending_retry_jobs_in_package(load_id):
                tables.add(ParsedLoadJobFileName.parse(os.path.basename(job_file)).table_name)
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        job_id = getattr(current, "job_id", None)
        if isinstance(job_id, str) and "." in job_id:
            tables.add(job_id.split(".", 1)[0])  # dlt's job ids are <table>.<file id>...
        current = getattr(current, "exception", None) or current.__cause__ or current.__context__
    return sorted(t for t in tables if not t.startswith("_dlt"))


def load_pending(pipeline: dlt.Pipeline, operations: Sequence[Operation]) -> Loaded:
    """Normalise and load every pending package, then repair what they wrote.

    On failure the unloaded packages are aborted (state and schema rewound, so their data is
    fetched again) and LoadFailed says which tables hold rows they committed before failing.
    """
    pending = pending_load_ids(pipeline)
    if not pending:
        return Loaded()
    try:
        normalized = pipeline.normalize()
        info = pipeline.load()
    except Exception as exc:
        reason = _reason(exc)
        unloaded = pending_load_ids(pipeline)
        loaded = [load_id for load_id in pending if load_id not in unloaded]
        log.warning("load failed (%s); aborting packages %s", reason, ", ".join(unloaded))
        failed_tables = _failed_tables(pipeline, unloaded, exc)
        pipeline.abort_packages()
        if loaded:
            repair(pipeline, loaded, operations)
        committed = rows_of_loads(pipeline, unloaded, operations)
        raise LoadFailed(reason, unloaded, committed, failed_tables) from exc
    loaded = [load_id for load_id in pending if load_id in set(info.loads_ids)] or pending
    counts = dict(normalized.row_counts) if normalized else {}
    return Loaded(
        load_ids=loaded,
        row_counts={t: n for t, n in counts.items() if n and not t.startswith("_dlt")},
        removed=repair(pipeline, loaded, operations),
    )


def settle_leftovers(pipeline: dlt.Pipeline, operations: Sequence[Operation]) -> Leftovers:
    """Complete, or else drop, the packages an earlier run left; before this run fetches."""
    pending = pending_load_ids(pipeline)
    if not pending:
        return Leftovers()
    log.warning("found %d load package(s) left by an earlier run: %s", len(pending), pending)
    try:
        completed = load_pending(pipeline, operations).load_ids
    except LoadFailed as failed:
        done = [load_id for load_id in pending if load_id not in failed.load_ids]
        return Leftovers(
            completed=done,
            dropped=failed.load_ids,
            tables=rows_of_loads(pipeline, done, operations),
            partial=failed.committed,
            reason=failed.reason,
        )
    return Leftovers(completed=completed, tables=rows_of_loads(pipeline, completed, operations))


# ------------------------------------------------------------------------------ the warehouse


@dataclass(frozen=True)
class _Table:
    name: str
    parent: str | None
    depth: int


def _tables_of(op: Operation, existing: set[str], tables: Mapping[str, Any]) -> list[_Table]:
    """The operation's root table and its child tables in the warehouse, parents first.

    `tables` is dlt's schema's tables (read once: each `pipeline.default_schema` reloads it).
    """
    if op.name not in existing:
        return []
    found = [_Table(op.name, None, 0)]
    for name in sorted(existing):
        if name.startswith(f"{op.name}__"):
            parent = tables.get(name, {}).get("parent") or op.name
            found.append(_Table(name, parent, name.count("__")))
    return sorted(found, key=lambda t: t.depth)


def _in(values: Iterable[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def _delete_copies(sql: Any, table: str, partition: str, where: str, keep: str) -> int:
    """Delete rows of `table` matching `where` that repeat `partition`, keeping one by `keep`."""
    numbered = (
        f"select rowid as row, row_number() over (partition by {partition} order by {keep}) "
        f"as copy from {table} where {where}"
    )
    deleted = sql.execute_sql(
        f"delete from {table} where rowid in (select row from ({numbered}) as n where copy > 1)"
    )
    return int(deleted[0][0]) if deleted else 0


def repair(
    pipeline: dlt.Pipeline, load_ids: Sequence[str], operations: Sequence[Operation]
) -> dict[str, int]:
    """Keep one copy of every row these loads wrote; returns the rows removed per table.

    - root rows repeated with the same `_dlt_id` (a replayed job) keep their first copy;
    - root rows repeating a merge key within these loads (a listing that shifted while paged)
      keep the last one written, the most recent page;
    - child rows of these loads repeated with the same `_dlt_id` keep one copy;
    - child rows whose parent row is gone (removed above, or by an earlier faulty repair) go.

    One counting query per table finds nothing to do on a healthy load; rows are deleted by
    DuckDB's rowid, so two copies with the same `_dlt_id` never both go.
    """
    if not load_ids or not pipeline.default_schema_name:
        return {}
    of_loads = f"_dlt_load_id in ({_in(load_ids)})"
    removed: dict[str, int] = {}
    with pipeline.sql_client() as sql:
        existing = existing_tables(sql)
        schema_tables = pipeline.default_schema.tables
        for op in operations:
            tables = _tables_of(op, existing, schema_tables)
            if not tables:
                continue
            root = sql.make_qualified_table_name(op.name)
            keys = ", ".join(sql.escape_column_name(k) for k in primary_key(op))
            distinct_keys = f"count(distinct ({keys}))" if keys else "count(*)"
            with sql.execute_query(
                f"select count(*), count(distinct _dlt_id), {distinct_keys} "
                f"from {root} where {of_loads}"
            ) as cursor:
                rows, ids, distinct = cursor.fetchone()
            counts: dict[str, int] = {op.name: 0}
            if rows != ids:
                counts[op.name] += _delete_copies(sql, root, "_dlt_id", of_loads, "rowid")
            if keys and rows != distinct:
                counts[op.name] += _delete_copies(sql, root, keys, of_loads, "rowid desc")
            roots_of_loads = f"_dlt_root_id in (select _dlt_id from {root} where {of_loads})"
            for child in tables[1:]:
                name = sql.make_qualified_table_name(child.name)
                parent = sql.make_qualified_table_name(child.parent)
                orphaned = (
                    f"not exists (select 1 from {parent} as p where p._dlt_id = c._dlt_parent_id)"
                )
                with sql.execute_query(
                    f"select (select count(*) - count(distinct _dlt_id) from {name} "
                    f"where {roots_of_loads}), (select count(*) from {name} as c where {orphaned})"
                ) as cursor:
                    copies, orphans = cursor.fetchone()
                counts[child.name] = 0
                if copies:
                    counts[child.name] += _delete_copies(
                        sql, name, "_dlt_id", roots_of_loads, "rowid"
                    )
                if orphans:
                    deleted = sql.execute_sql(
                        f"delete from {name} where rowid in "
                        f"(select c.rowid from {name} as c where {orphaned})"
                    )
                    counts[child.name] += int(deleted[0][0]) if deleted else 0
            for table, count in counts.items():
                if count:
                    removed[table] = count
                    log.warning("%s: removed %d repeated or orphaned rows", table, count)
    return removed


def rows_of_loads(
    pipeline: dlt.Pipeline, load_ids: Sequence[str], operations: Sequence[Operation]
) -> dict[str, int]:
    """Rows the warehouse holds from these loads, per table (child rows through their root)."""
    if not load_ids or not pipeline.default_schema_name:
        return {}
    loads = _in(load_ids)
    counts: dict[str, int] = {}
    with pipeline.sql_client() as sql:
        existing = existing_tables(sql)
        schema_tables = pipeline.default_schema.tables
        for op in operations:
            for table in _tables_of(op, existing, schema_tables):
                name = sql.make_qualified_table_name(table.name)
                root = sql.make_qualified_table_name(op.name)
                where = (
                    f"_dlt_load_id in ({loads})"
                    if table.parent is None
                    else f"_dlt_root_id in (select _dlt_id from {root} "
                    f"where _dlt_load_id in ({loads}))"
                )
                with sql.execute_query(f"select count(*) from {name} where {where}") as cursor:
                    rows = int(cursor.fetchone()[0])
                if rows:
                    counts[table.name] = rows
    return counts


def existing_tables(sql: object) -> set[str]:
    """The tables of the raw dataset, asked of the database through dlt's `sql` client."""
    with sql.execute_query(  # type: ignore[attr-defined]
        "select table_name from information_schema.tables where table_schema = %s",
        sql.dataset_name,  # type: ignore[attr-defined]
    ) as cursor:
        return {row[0] for row in cursor.fetchall()}
