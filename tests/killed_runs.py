"""`incomaker-elt ingest` in its own process, killed (SIGKILL) after the N-th SQL statement of
dlt's load step: tests/kill_during_load.py, started here with the address, token and warehouse.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KILLER = Path(__file__).with_name("kill_during_load.py")


def ingest_killed_after(
    base_url: str, token: str, warehouse: Path, kill_after: int, arguments: list[str]
) -> subprocess.CompletedProcess:
    """`incomaker-elt ingest ARGUMENTS`, killed after `kill_after` load statements (0: not
    killed, and the count is printed on stderr as `load statements: N`)."""
    env = {
        **os.environ,
        "INCOMAKER_BASE_URL": base_url,
        "INCOMAKER_API_TOKEN": token,
        "INCOMAKER_WAREHOUSE": str(warehouse),
        "RUNTIME__LOG_LEVEL": "WARNING",
        "KILL_AFTER_STATEMENT": str(kill_after),
    }
    command = [sys.executable, str(KILLER), "ingest", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
