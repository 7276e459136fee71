"""Row-for-row comparison of two DuckDB warehouses: is one run history's result another's?

`compare_warehouses(left, right)` attaches both files read-only to an in-memory DuckDB and, for
every table and view of the chosen schemas (marts and staging by default), counts the rows each
side has that the other lacks, with `EXCEPT ALL` both ways, so duplicates count too. It compares
what a user sees as current, not how it got there:

- columns that record the load rather than the data (`_dlt_load_id`, `_dlt_id`, `_loaded_at`) are
  left out: two histories load the same rows in different loads; so are a snapshot's date and
  query (`snapshot_date`, `query_params`): an old campaign's link clicks, snapshotted when it was
  last re-read, say the same as a full load's snapshot of today;
- a relation with an `is_latest_snapshot` column (aggregate snapshots in staging) is compared on
  its latest snapshot only: the history of earlier snapshots is what differs between an
  incremental warehouse and a fresh full load, by design.

Views keep working on an attached file: DuckDB binds a view's tables in the view's own database,
so `left.staging.x` reads left's raw tables even though both files are named the same.

Used by tests/test_incremental_equals_full.py and the lifecycle property tests:

    differences = compare_warehouses(incremental_path, full_path)
    assert not differences, describe(differences)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

LOAD_COLUMNS = ("_dlt_load_id", "_dlt_id", "_loaded_at")
"""Columns that say which load wrote a row, not what the row says."""
SNAPSHOT_COLUMNS = ("snapshot_date", "query_params")
"""Columns that say when and with which query an aggregate was snapshotted."""
CURRENT_FLAG = "is_latest_snapshot"
"""A relation with this column keeps history; only its flagged rows are current."""
DEFAULT_SCHEMAS = ("marts", "staging")
_LEFT, _RIGHT = "left_warehouse", "right_warehouse"


@dataclass(frozen=True)
class Difference:
    """How one relation differs between the two warehouses."""

    relation: str
    """schema.name"""
    left_rows: int
    right_rows: int
    only_left: int
    """Rows of the left side's current view that the right one lacks (EXCEPT ALL)."""
    only_right: int
    problem: str = ""
    """Set when the relation could not be compared row by row (missing, other columns)."""
    examples: list[tuple] = field(default_factory=list)
    """A few rows only one side has, each prefixed with 'left' or 'right'."""

    def line(self) -> str:
        if self.problem:
            return f"{self.relation}: {self.problem}"
        return (
            f"{self.relation}: {self.left_rows} rows vs {self.right_rows}; "
            f"{self.only_left} only left, {self.only_right} only right"
        )


def describe(differences: Sequence[Difference], examples: int = 3) -> str:
    """A readable report of the differences, with a few example rows of each."""
    lines = [f"{len(differences)} relation(s) differ:"]
    for difference in differences:
        lines.append(f"  {difference.line()}")
        lines += [f"      {row}" for row in difference.examples[:examples]]
    return "\n".join(lines)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _relations(con: duckdb.DuckDBPyConnection, database: str, schemas: Sequence[str]) -> set[str]:
    found = con.execute(
        """
        select schema_name || '.' || table_name from duckdb_tables()
        where database_name = $database and list_contains($schemas, schema_name)
        union all
        select schema_name || '.' || view_name from duckdb_views()
        where database_name = $database and list_contains($schemas, schema_name)
            and not internal
        """,
        {"database": database, "schemas": list(schemas)},
    ).fetchall()
    return {name for (name,) in found}


def _columns(con: duckdb.DuckDBPyConnection, database: str, relation: str) -> list[str]:
    schema, name = relation.split(".", 1)
    found = con.execute(
        """
        select column_name from duckdb_columns()
        where database_name = $database and schema_name = $schema and table_name = $name
        order by column_index
        """,
        {"database": database, "schema": schema, "name": name},
    ).fetchall()
    return [column for (column,) in found]


def _compare_one(
    con: duckdb.DuckDBPyConnection, relation: str, ignore_columns: Iterable[str], examples: int
) -> Difference | None:
    left_columns = _columns(con, _LEFT, relation)
    right_columns = _columns(con, _RIGHT, relation)
    if left_columns != right_columns:
        return Difference(
            relation,
            0,
            0,
            0,
            0,
            problem=f"columns differ: {left_columns} vs {right_columns}",
        )
    ignored = set(ignore_columns)
    compared = [c for c in left_columns if c not in ignored]
    select = ", ".join(_quote(c) for c in compared)
    where = f"where {_quote(CURRENT_FLAG)}" if CURRENT_FLAG in left_columns else ""
    schema, name = relation.split(".", 1)

    def current(database: str) -> str:
        return f"select {select} from {database}.{_quote(schema)}.{_quote(name)} {where}"

    # Each side's current rows once, into memory: views are evaluated once, not per query.
    con.execute(f"create or replace temp table left_rows as {current(_LEFT)}")
    con.execute(f"create or replace temp table right_rows as {current(_RIGHT)}")
    left_rows, right_rows, only_left, only_right = con.execute(
        """
        select
            (select count(*) from left_rows),
            (select count(*) from right_rows),
            (select count(*) from (from left_rows except all from right_rows)),
            (select count(*) from (from right_rows except all from left_rows))
        """
    ).fetchone()
    if not (only_left or only_right):
        return None
    rows = [
        ("left", *row)
        for row in con.execute(
            f"from left_rows except all from right_rows limit {examples}"
        ).fetchall()
    ]
    rows += [
        ("right", *row)
        for row in con.execute(
            f"from right_rows except all from left_rows limit {examples}"
        ).fetchall()
    ]
    return Difference(relation, left_rows, right_rows, only_left, only_right, examples=rows)


def compare_warehouses(
    left: Path,
    right: Path,
    *,
    schemas: Sequence[str] = DEFAULT_SCHEMAS,
    relations: Sequence[str] | None = None,
    ignore_columns: Iterable[str] = LOAD_COLUMNS + SNAPSHOT_COLUMNS,
    examples: int = 5,
) -> list[Difference]:
    """The relations whose current rows differ between two warehouse files; empty when equal.

    `relations` ("schema.name") narrows the comparison; by default every table and view of
    `schemas` in either warehouse is compared, and one that only one side has is a difference.
    Neither file is written; both must be closed by their writers (DuckDB's file lock).
    """
    con = duckdb.connect()
    try:
        con.execute(f"attach '{left}' as {_LEFT} (read_only)")
        con.execute(f"attach '{right}' as {_RIGHT} (read_only)")
        left_names = _relations(con, _LEFT, schemas)
        right_names = _relations(con, _RIGHT, schemas)
        wanted = sorted(relations) if relations is not None else sorted(left_names | right_names)
        differences: list[Difference] = []
        for relation in wanted:
            if relation not in left_names or relation not in right_names:
                side = "left" if relation not in left_names else "right"
                differences.append(
                    Difference(relation, 0, 0, 0, 0, problem=f"missing in the {side} warehouse")
                )
                continue
            difference = _compare_one(con, relation, ignore_columns, examples)
            if difference is not None:
                differences.append(difference)
        return differences
    finally:
        con.close()
