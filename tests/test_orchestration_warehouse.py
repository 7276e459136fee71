"""The warehouse lock: two processes opening the warehouse take turns, and a dead one frees it."""

import multiprocessing
import time
from pathlib import Path

from incomaker_elt.orchestration.warehouse import exclusive


def _hold(path: str, seconds: float, ready, killed_before_release: bool) -> None:
    with exclusive(Path(path)):
        ready.set()
        time.sleep(seconds)
        if killed_before_release:
            import os

            os._exit(1)  # like a killed run: no clean-up code runs


def test_a_second_process_waits_for_the_first(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(warehouse), 1.5, ready, False))
    holder.start()
    assert ready.wait(60)
    waited: list[str] = []
    started = time.monotonic()
    with exclusive(warehouse, waited.append):
        elapsed = time.monotonic() - started
    holder.join(30)
    assert elapsed >= 0.5, "the lock did not make the second writer wait"
    assert waited and "waiting for another run" in waited[0]


def test_a_killed_holder_does_not_leave_the_warehouse_locked(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(warehouse), 0.2, ready, True))
    holder.start()
    assert ready.wait(60)
    holder.join(30)
    assert holder.exitcode == 1
    started = time.monotonic()
    with exclusive(warehouse):
        pass
    assert time.monotonic() - started < 5
