"""The DuckDB warehouse as the orchestration sees it: one writer at a time, readers read-only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

DUCKDB_POOL = "duckdb_warehouse"
"""Concurrency pool of every step that opens the warehouse file. `.dagster_home/dagster.yaml`
limits each pool to one step at a time: DuckDB lets one process hold the file (a writer also
excludes readers), so loads, dbt builds, checks reading tables and publishing take turns."""


@contextmanager
def read_only(warehouse_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for checks; it fails fast rather than waiting for a lock."""
    if not warehouse_path.is_file():
        raise FileNotFoundError(
            f"warehouse {warehouse_path} does not exist; materialise the raw tables first"
        )
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        yield con
    finally:
        con.close()
