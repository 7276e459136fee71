"""`incomaker-elt ingest` as a user runs it: a real socket, a killed process, its output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import httpx
import pytest
from api_pages import HEADERS, operation_at, total_items

from incomaker_elt.contract.settings import RAW_DATASET
from incomaker_elt.standin import StandIn

TOKEN = "standin-token"
ARGS = ["--only", "orders", "--start-date", "2026-06-01", "--end-date", "2026-06-30"]


@pytest.fixture(scope="module")
def server(small_world):
    standin = StandIn(small_world, token=TOKEN)
    with standin.serve(host="127.0.0.1", port=0) as base_url:
        yield standin, base_url


def ingest(base_url: str, warehouse: Path, *args: str, token: str = TOKEN) -> subprocess.Popen:
    env = {
        **os.environ,
        "INCOMAKER_BASE_URL": base_url,
        "INCOMAKER_API_TOKEN": token,
        "INCOMAKER_WAREHOUSE": str(warehouse),
        "RUNTIME__LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "incomaker_elt.cli", "ingest", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fetching_processes(parent: int) -> list[int]:
    """The API client's processes (incomaker_elt/ingestion/client_process.py) of a run."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"client_process" in command:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def api_total(standin: StandIn, base_url: str, path: str) -> int:
    """What the listing at `path` holds for June, asked over the socket in the API's dialect."""
    op = operation_at(standin.catalogue, path)
    with httpx.Client(base_url=base_url, headers=HEADERS) as api:
        return total_items(api, op, dateFrom="2026-06-01", dateTo="2026-06-30")


def test_killed_process_then_run_again_over_a_socket_ends_exact(server, tmp_path):
    standin, base_url = server
    warehouse = tmp_path / "warehouse" / "incomaker.duckdb"
    standin.clear_log()
    victim = ingest(base_url, warehouse, *ARGS)
    # Kill it while it fetches the order details (one request per order).
    deadline = time.monotonic() + 60
    while len(standin.request_log) < 60 and victim.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    fetching = fetching_processes(victim.pid)
    assert fetching, "the run fetches in processes of its own"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in fetching):
        assert time.monotonic() < deadline, "a fetching process outlived the killed run"
        time.sleep(0.05)

    again = ingest(base_url, warehouse, *ARGS)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    orders = api_total(standin, base_url, "/orders")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        counts = {
            table: con.execute(
                f"select count(*), count(distinct order_id) from {RAW_DATASET}.{table}"
            ).fetchone()
            for table in ("orders", "order_detail", "order_recommendation")
        }
    assert counts["orders"] == (orders, orders)
    assert counts["order_detail"] == (orders, orders)
    recommendations = api_total(standin, base_url, "/orders/recommendations")
    assert counts["order_recommendation"][0] == recommendations
    # Progress per operation, then the table of rows per raw table.
    assert "order_detail" in out and "pages" in out
    assert "raw table" in out and f"{orders:,}" in out


def test_wrong_token_exits_non_zero_with_the_reason_and_never_the_token(server, tmp_path):
    _, base_url = server
    wrong = "not-the-token-42"
    run = ingest(base_url, tmp_path / "w" / "incomaker.duckdb", *ARGS, token=wrong)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 1
    assert "rejected the token" in err
    assert wrong not in out + err
    assert not (tmp_path / "w" / "incomaker.duckdb").exists()


def test_start_after_end_is_refused(server, tmp_path):
    _, base_url = server
    run = ingest(
        base_url,
        tmp_path / "incomaker.duckdb",
        "--start-date",
        str(date(2026, 7, 1)),
        "--end-date",
        "2026-06-30",
    )
    _, err = run.communicate(timeout=60)
    assert run.returncode == 1 and "after end date" in err
