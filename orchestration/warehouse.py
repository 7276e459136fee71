"""The DuckDB warehouse as the orchestration sees it: one writer at a time, readers read-only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

try:
    import fcntl
except ImportError:  # Windows: only the Dagster pool and run queue serialise writers there
    fcntl = None  # type: ignore[assignment]

DUCKDB_POOL = "duckdb_warehouse"
"""Concurrency pool of every step that opens the warehouse file. `.dagster_home/dagster.yaml`
limits each pool to one step at a time: DuckDB lets one process hold the file (a writer also
excludes readers), so loads, dbt builds, checks reading tables and publishing take turns."""


@contextmanager
def exclusive(warehouse_path: Path, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the warehouse's lock file while a step opens the warehouse.

    The pool serialises steps of runs recorded in one Dagster instance. `incomaker-elt run`
    executes with its own in-memory instance, so an OS lock beside the warehouse is what keeps it
    and a run started from the UI apart. The OS releases it when a process dies, so a killed run
    never leaves the warehouse locked.
    """
    if fcntl is None:
        yield
        return
    warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = warehouse_path.with_name(warehouse_path.name + ".lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for another run to finish with {warehouse_path.name}")
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            if log:
                log(f"warehouse free after {time.monotonic() - started:.0f} s")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def read_only(warehouse_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for checks; it fails fast rather than waiting for a lock."""
    if not warehouse_path.is_file():
        raise FileNotFoundError(
            f"warehouse {warehouse_path} does not exist; materialise the raw tables first"
        )
    with exclusive(warehouse_path):
        con = duckdb.connect(str(warehouse_path), read_only=True)
        try:
            yield con
        finally:
            con.close()
