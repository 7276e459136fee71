"""`incomaker-elt ingest` that dies (SIGKILL) right after the N-th SQL statement of dlt's load step.

Test code only, run as a subprocess by tests/test_load_integrity.py: a crash at a chosen point of
the load (after a staging insert, inside a merge, before the load is recorded...), made
repeatable by counting the statements the load step sends to DuckDB. With
KILL_AFTER_STATEMENT=0 nothing is killed and the count is printed on stderr, so the test can
spread its kill points over the whole load step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlt.destinations.impl.duckdb.sql_client import DuckDbSqlClient
from dlt.load import Load

KILL_AFTER = int(os.environ.get("KILL_AFTER_STATEMENT", "0"))
COUNT_PREFIX = "load statements: "

_loading = threading.Event()
_lock = threading.Lock()
_count = 0
_run = Load.run
_execute_query = DuckDbSqlClient.execute_query


def _load_run(self: Load, pool: Any) -> Any:
    _loading.set()
    try:
        return _run(self, pool)
    finally:
        _loading.clear()


@contextmanager
def _counted(self: DuckDbSqlClient, query: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    global _count
    with _execute_query(self, query, *args, **kwargs) as cursor:
        yield cursor
    if _loading.is_set():
        with _lock:
            _count += 1
            if _count == KILL_AFTER:
                os.kill(os.getpid(), signal.SIGKILL)


Load.run = _load_run  # type: ignore[method-assign]
DuckDbSqlClient.execute_query = _counted  # type: ignore[method-assign]

if __name__ == "__main__":
    from incomaker_elt.cli import main

    code = main(sys.argv[1:])
    print(f"{COUNT_PREFIX}{_count}", file=sys.stderr)
    sys.exit(code)
