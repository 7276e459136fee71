"""How long the Dagster code location takes to load, as a code server loads it (issue 12: 2 s).

    python bench/definitions_load.py               # 5 loads, each in a fresh process
    python bench/definitions_load.py --runs 9
    python bench/definitions_load.py --against HEAD~3   # the same, alternating with a commit
    python bench/definitions_load.py --floor       # and with dagster-dbt's floor
    python bench/definitions_load.py --api as-is   # this shell's API settings (see below)
    make bench-definitions

The children get INCOMAKER_BASE_URL and INCOMAKER_API_TOKEN as `incomaker-elt ui` gives the code
server against the stand-in, and as a configured deployment sets them, unless the shell has them.
With neither set (`--api as-is` in a bare shell), the definitions look for the address in dlt's
config and secrets (incomaker_elt.contract.settings), which imports dlt: about 0.7 s more.

Each load runs in a child Python of its own, so nothing is imported or cached beforehand; its
phases are timed inside the child, in wall and CPU (user + system) seconds:

- import: `import incomaker_elt.orchestration.definitions`, dagster, dagster-dbt and the rest
  included (the child imports nothing of the project or of Dagster before);
- build: what a Dagster code server then does with the module
  (dagster._grpc.server.LoadedRepositories): `defs` resolved in Dagster's load context, the
  repository built from the Definitions and every lazily built definition loaded. The gRPC
  server module, which a code server imports before it loads the code, is imported between
  the two, untimed;
- snapshot: the repository's snapshot the UI asks the code server for (job snapshots deferred,
  as `dagster dev` asks), for information: not part of the target.

`definitions` (the target) is import + build. `process` is the whole child as the parent sees
it, interpreter start-up and this script's own imports included. On a quiet machine wall
seconds are about CPU seconds (one thread); on a busy one CPU seconds move less, and the load
average before and after says how busy it was. With --against, loads of the working tree and
of the commit (a copy from `git archive`, with the working tree's dbt manifest) alternate, so
both see the same machine: compare them within one run of this script. With --floor, loads of
bench/definitions_floor.py alternate too: dagster-dbt's `@dbt_assets` over the same manifest and
the two resources issue 11 keeps, nothing else, loaded the same way; the project's definitions
cannot load faster than that.

bench/nightly.py's "definitions loaded in" is another figure: one build_definitions() in its run
process, which has imported Dagster before, without the code server's repository step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE = "incomaker_elt.orchestration.definitions"
FLOOR_MODULE = "definitions_floor"
"""bench/definitions_floor.py, imported from bench/."""
ATTRIBUTE = "defs"
TARGET_SECONDS = 2.0
"""Issue 12: the definitions load within 2 s."""
RESULT_PREFIX = "DEFINITIONS-LOAD-RESULT "
PHASES = ("import", "build", "definitions", "snapshot", "process")
MANIFEST = Path("dbt_project") / "target" / "manifest.json"

Times = dict[str, dict[str, float]]

CODE_SERVER_API = {
    "INCOMAKER_BASE_URL": "http://127.0.0.1:8765",
    "INCOMAKER_API_TOKEN": "definitions-load-bench",
}
"""What `incomaker-elt ui` gives the code server against the stand-in (a configured deployment
sets the same two variables): the definitions then read the API from the environment."""


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = _clock()
    return {"wall": wall - start[0], "cpu": cpu - start[1]}


def load_definitions_timed(root: Path = REPO, module: str = MODULE) -> Times:
    """Import the code location and build it as a code server does; seconds per phase."""
    import importlib

    started = _clock()
    importlib.import_module(module)
    imported = _since(started)

    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._grpc.server import LoadedRepositories

    origin = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name=module,
        attribute=ATTRIBUTE,
        working_directory=str(root),
    )
    started = _clock()
    loaded = LoadedRepositories(origin, None, ["dagster"], None)
    built = _since(started)

    (repository,) = loaded.definitions_by_name.values()
    started = _clock()
    RepositorySnap.from_def(repository, defer_snapshots=True)
    snapshot = _since(started)
    return {
        "import": imported,
        "build": built,
        "definitions": {k: imported[k] + built[k] for k in imported},
        "snapshot": snapshot,
    }


def _load_once(root: Path, module: str) -> Times:
    """One load of `module` in a fresh child Python whose imports come from `root`."""
    bench = [str(root / "bench")] if module == FLOOR_MODULE else []
    paths = [str(root), *bench, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    started = time.perf_counter()
    before = os.times()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(root), module],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"loading the definitions from {root} failed:\n{done.stderr[-4000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        raise SystemExit(
            f"the child printed no result:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["process"] = {
        "wall": time.perf_counter() - started,
        "cpu": (after.children_user - before.children_user)
        + (after.children_system - before.children_system),
    }
    return result


def _copy_at(revision: str) -> Path:
    """The repository at `revision`, with the working tree's dbt manifest (not committed)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-definitions-tree-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / MANIFEST, folder / MANIFEST)
    return folder


def _summary(results: list[Times]) -> dict[str, dict[str, float]]:
    summary = {}
    for phase in PHASES:
        walls = [r[phase]["wall"] for r in results]
        cpus = [r[phase]["cpu"] for r in results]
        summary[phase] = {
            "wall_median": statistics.median(walls),
            "wall_min": min(walls),
            "cpu_median": statistics.median(cpus),
            "cpu_min": min(cpus),
        }
    return summary


def _print(name: str, runs: int, summary: dict[str, dict[str, float]]) -> None:
    print(f"{name}: {runs} loads, seconds   median wall (min)   median cpu (min)")
    for phase, s in summary.items():
        print(
            f"  {phase:<12} {s['wall_median']:6.2f} ({s['wall_min']:5.2f})"
            f"      {s['cpu_median']:6.2f} ({s['cpu_min']:5.2f})"
        )
    definitions = summary["definitions"]
    verdict = "within" if definitions["wall_median"] <= TARGET_SECONDS else "over"
    print(
        f"  definitions (import + build): median {definitions['wall_median']:.2f} s wall, "
        f"{definitions['cpu_median']:.2f} s CPU: {verdict} {TARGET_SECONDS} s"
    )


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="loads, each in a fresh process")
    parser.add_argument("--against", metavar="REVISION", help="alternate with loads of a commit")
    parser.add_argument(
        "--floor", action="store_true", help="alternate with loads of dagster-dbt's floor too"
    )
    parser.add_argument(
        "--api",
        choices=("environment", "as-is"),
        default="environment",
        help=(
            "environment (default): INCOMAKER_BASE_URL and INCOMAKER_API_TOKEN set as "
            "`incomaker-elt ui` sets them for the code server, unless already set; as-is: this "
            "shell's environment (with neither set, the definitions look for them in dlt's "
            "config and secrets, which imports dlt)"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the medians as JSON too")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "MODULE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        times = load_definitions_timed(Path(args.child[0]), args.child[1])
        print(RESULT_PREFIX + json.dumps(times), flush=True)
        return 0

    if args.api == "environment":
        added = [name for name in CODE_SERVER_API if name not in os.environ]
        for name in added:  # the children inherit them
            os.environ[name] = CODE_SERVER_API[name]
    else:
        added = []
    print(f"API in the environment: {', '.join(added) or 'as this shell has it'}")
    loads = {"working tree": (REPO, MODULE)}
    if args.against:
        loads[args.against] = (_copy_at(args.against), MODULE)
    if args.floor:
        loads["dagster-dbt floor"] = (REPO, FLOOR_MODULE)
    try:
        print(f"load average before: {_load_average()} ({os.cpu_count()} CPUs)", flush=True)
        results: dict[str, list[Times]] = {name: [] for name in loads}
        for _ in range(args.runs):
            for name, (root, module) in loads.items():
                results[name].append(_load_once(root, module))
        print(f"load average after:  {_load_average()}")
    finally:
        for root, _module in loads.values():
            if root != REPO:
                shutil.rmtree(root, ignore_errors=True)
    summaries = {name: _summary(found) for name, found in results.items()}
    for name, summary in summaries.items():
        _print(f"{name} ({loads[name][1]})", args.runs, summary)
    if args.json:
        print(json.dumps({"load_average_after": os.getloadavg(), "medians": summaries}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
