"""The DuckDB warehouse as the orchestration sees it: one writer at a time, readers read-only.

Two locks guard the warehouse file:

- our lock file beside it (`incomaker.duckdb.lock`, `exclusive`), which our own runs take in turn
  (a run waits as long as the run before it takes) and which names the process holding it;
- DuckDB's own lock on the database file, which any process opening it takes: a writer excludes
  everyone, a reader excludes writers. A BI tool, a notebook or a script that opens the working
  warehouse, even read-only and only for a moment, makes a writer's `connect` fail at once.

Every step of ours that opens the warehouse therefore waits for DuckDB's lock too, within
INCOMAKER_WAREHOUSE_LOCK_TIMEOUT seconds, retrying with a growing pause, and when it gives up it
raises `WarehouseBusy` naming the process that holds the file (DuckDB's error gives its PID).
dbt-duckdb and dlt open their own connections, so `exclusive` waits until the file can be opened
before the step starts, and `retry_while_locked` repeats a step that still lost the race.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import duckdb

from incomaker_elt.contract.settings import warehouse_lock_timeout

try:
    import fcntl
except ImportError:  # Windows: only the Dagster pool and run queue serialise writers there
    fcntl = None  # type: ignore[assignment]

DUCKDB_POOL = "duckdb_warehouse"
"""Concurrency pool of every step that opens the warehouse file. `.dagster_home/dagster.yaml`
limits each pool to one step at a time: DuckDB lets one process hold the file (a writer also
excludes readers), so loads, dbt builds, checks reading tables and publishing take turns."""

LOCK_CONFLICT = "Could not set lock on file"
"""What DuckDB says when another process holds the database file."""

_HOLDER_PID = re.compile(r"\(PID (\d+)\)")
_FIRST_PAUSE_SECONDS = 0.02
_LONGEST_PAUSE_SECONDS = 2.0

_HELD: set[Path] = set()
"""Lock files this process holds: a flock taken twice by one process on two handles would wait
for itself, so an inner `exclusive` of the same warehouse just goes ahead."""

Access = Literal["read", "write"]
T = TypeVar("T")


class WarehouseBusy(RuntimeError):
    """Another process held the warehouse file for longer than the lock timeout."""

    def __init__(self, message: str, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


def lock_path(warehouse_path: Path) -> Path:
    return warehouse_path.with_name(warehouse_path.name + ".lock")


def is_lock_conflict(error: BaseException) -> bool:
    """True when `error`, or anything it was raised from, is DuckDB refusing a held file."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if LOCK_CONFLICT in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _program(pid: int) -> str | None:
    """The program a process runs (its first two words, never its arguments: they may hold a
    token), or None where /proc cannot tell."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    names = [Path(w.decode(errors="replace")).name for w in words[:2] if w]
    return " ".join(names) or None


def holder_description(message: str) -> tuple[str, int | None]:
    """`PID 123 (python3 script.py)` from DuckDB's lock error, and the PID."""
    match = _HOLDER_PID.search(message)
    if not match:
        return "another process", None
    pid = int(match.group(1))
    program = _program(pid)
    return (f"PID {pid} ({program})" if program else f"PID {pid}"), pid


def _busy(warehouse_path: Path, error: BaseException, waited: float) -> WarehouseBusy:
    holder, pid = holder_description(str(error))
    return WarehouseBusy(
        f"warehouse {warehouse_path} stayed locked by {holder} for {waited:.0f} s "
        f"(INCOMAKER_WAREHOUSE_LOCK_TIMEOUT); DuckDB lets no one write while any other process "
        "has the file open, even read-only. Close that connection (BI tools and notebooks should "
        "open the serving copy, docs/serving.md) or raise the timeout, then run again",
        holder_pid=pid,
    )


def retry_while_locked(
    step: Callable[[], T],
    warehouse_path: Path,
    *,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> T:
    """Run `step`; while it fails because another process holds the warehouse file, pause
    (a growing pause, up to 2 s) and run it again, for at most `timeout` seconds in all."""
    limit = warehouse_lock_timeout() if timeout is None else timeout
    started = time.monotonic()
    pause = _FIRST_PAUSE_SECONDS
    announced = False
    while True:
        try:
            return step()
        except Exception as exc:
            if not is_lock_conflict(exc):
                raise
            waited = time.monotonic() - started
            if waited >= limit:
                raise _busy(warehouse_path, exc, waited) from exc
            if log and not announced:
                holder, _ = holder_description(str(exc))
                log(f"{warehouse_path.name} is open in {holder}; waiting up to {limit:.0f} s")
                announced = True
            time.sleep(min(pause, max(limit - waited, 0.0)))
            pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)


def connect(
    warehouse_path: Path,
    *,
    read_only: bool = False,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """`duckdb.connect` that waits (within the lock timeout) for another process to let go."""
    return retry_while_locked(
        lambda: duckdb.connect(str(warehouse_path), read_only=read_only),
        warehouse_path,
        timeout=timeout,
        log=log,
    )


def wait_until_free(
    warehouse_path: Path,
    access: Access = "write",
    *,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Open and close the warehouse once, waiting while another process holds it.

    For steps whose library opens its own connections (dbt-duckdb, dlt): they start with the file
    free instead of failing on a reader's momentary lock. Any other error is left to the step.
    """
    if not warehouse_path.is_file():
        return
    try:
        connect(warehouse_path, read_only=access == "read", timeout=timeout, log=log).close()
    except duckdb.Error as exc:
        if is_lock_conflict(exc):
            raise
        # e.g. this process already has the file open with another configuration: not a lock.


def _holder_note(handle_path: Path) -> str:
    try:
        return handle_path.read_text().strip() or "another run"
    except OSError:
        return "another run"


@contextmanager
def exclusive(
    warehouse_path: Path,
    log: Callable[[str], None] | None = None,
    *,
    access: Access = "write",
    timeout: float | None = None,
) -> Iterator[None]:
    """Hold the warehouse's lock file while a step opens the warehouse, and start the step only
    once DuckDB's own lock on the file is free for `access` (within the lock timeout).

    The pool serialises steps of runs recorded in one Dagster instance. `incomaker-elt run`
    executes with its own in-memory instance, so an OS lock beside the warehouse is what keeps it
    and a run started from the UI apart. The OS releases it when a process dies, so a killed run
    never leaves the warehouse locked. The holder writes its PID and program into the lock file,
    so a waiting run can say whom it waits for.
    """
    warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(warehouse_path)
    if path in _HELD:  # this process holds it already (a command around its steps)
        yield
        return
    if fcntl is None:
        wait_until_free(warehouse_path, access, timeout=timeout, log=log)
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(
                    f"waiting for another run to finish with {warehouse_path.name} "
                    f"(held by {_holder_note(path)})"
                )
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            if log:
                log(f"warehouse free after {time.monotonic() - started:.0f} s")
        try:
            handle.seek(0)
            handle.truncate()
            program = _program(os.getpid()) or "python"
            handle.write(f"PID {os.getpid()} ({program}) since {datetime.now(UTC):%H:%M:%S} UTC\n")
            handle.flush()
            wait_until_free(warehouse_path, access, timeout=timeout, log=log)
            _HELD.add(path)
            yield
        finally:
            _HELD.discard(path)
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def read_only(
    warehouse_path: Path, *, timeout: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for checks, once no other process writes the file (waiting at
    most `timeout` seconds; None: INCOMAKER_WAREHOUSE_LOCK_TIMEOUT)."""
    if not warehouse_path.is_file():
        raise FileNotFoundError(
            f"warehouse {warehouse_path} does not exist; materialise the raw tables first"
        )
    with (
        exclusive(warehouse_path, access="read", timeout=timeout),
        connect(warehouse_path, read_only=True, timeout=timeout) as con,
    ):
        yield con
