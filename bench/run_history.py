"""What recording `incomaker-elt run` in DAGSTER_HOME costs: the same first run, recorded or not.

    python bench/run_history.py              # small world, 2 rounds (about 12 minutes)
    python bench/run_history.py --rounds 1 --scale medium

Each round runs `incomaker-elt run` twice from an empty warehouse on the stand-in: once as it is
(the run recorded in a fresh DAGSTER_HOME, incomaker_elt.orchestration.run_history) and once with
an in-memory
Dagster instance instead (what `make run` did before), alternating which goes first. It prints the
wall time of each, the ratio recorded / in memory per round, and how many events the recorded run
stored. Target (issue 10): the recorded run at most ~20% slower. Compare ratios within one run of
this script: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

IN_MEMORY = (
    "import dagster as dg, incomaker_elt.orchestration.run_history as history\n"
    "history.recording_instance = lambda home: dg.DagsterInstance.ephemeral()\n"
    "from incomaker_elt.cli import main\n"
    "sys.exit(main())\n"
)
RECORDED = "from incomaker_elt.cli import main\nsys.exit(main())\n"


def one_run(mode: str, scale: str, folder: Path) -> float:
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "INCOMAKER_WAREHOUSE": str(folder / "warehouse" / "incomaker.duckdb"),
    }
    env.pop("INCOMAKER_API_TOKEN", None)
    code = f"import sys\nsys.argv = ['incomaker-elt', 'run', '--scale', {scale!r}]\n"
    code += IN_MEMORY if mode == "in memory" else RECORDED
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(
            f"{mode} run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return seconds


def stored_events(home: Path) -> int:
    total = 0
    for shard in (home / "history" / "runs").glob("*.db"):
        if shard.stem == "index":
            continue
        with sqlite3.connect(shard) as db:
            total += db.execute("select count(*) from event_logs").fetchone()[0]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for round_number in range(args.rounds):
        order = ["recorded", "in memory"] if round_number % 2 == 0 else ["in memory", "recorded"]
        seconds: dict[str, float] = {}
        events = 0
        for mode in order:
            with tempfile.TemporaryDirectory(prefix="bench-run-history-") as folder:
                seconds[mode] = one_run(mode, args.scale, Path(folder))
                if mode == "recorded":
                    events = stored_events(Path(folder) / "dagster_home")
            print(f"  round {round_number + 1} {mode:<9}: {seconds[mode]:6.1f} s", flush=True)
        ratio = seconds["recorded"] / seconds["in memory"]
        print(
            f"round {round_number + 1}: recorded / in memory = {ratio:.2f} "
            f"({events:,} events stored), load now {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
