"""What a nightly run costs against a first full load, and whether the marts stay exact.

    python bench/nightly.py                        # medium world: first load, then +1 and +7 days
    python bench/nightly.py --scale large
    python bench/nightly.py --scale small --nights 1 1 1   # three nights in a row
    make bench-nightly                             # the same as the first line

1. The stand-in is served from a process of its own (its CPU is not the pipeline's); it counts the
   requests it answers per operation, and its today is moved between runs.
2. A first full load: the refresh job (`warehouse_refresh`, the job the nightly schedule runs) over
   every day up to today, executed in process as `incomaker-elt run` executes it and recorded in a
   temporary DAGSTER_HOME.
3. Nightly runs: today moves forward by each of --nights days (1, then 7), and the job runs with
   the tags of the run request the nightly schedule makes for that today
   (incomaker_elt/orchestration/schedules.py).
4. A fresh full load at the last today into another warehouse: the marts after the nightly runs
   must equal it row for row (the lifecycle property: tests/lifecycle.py and
   tests/warehouse_compare.py).

Each run executes in a child process of its own, so its memory is its own: the peak RSS of its
process tree (the run and the dbt it starts), sampled from /proc. Per run it prints API requests,
rows fetched, rows written, wall time per stage from the run's step events, peak memory, and each
nightly run as a share of the first load; then the operations that make the nightly requests, and
a verdict against issue 12's target (at `large`, a one-day-later nightly run at most 10% of a full
load's wall time and of its requests). The machine is shared: the load average before and after
says how quiet it was; compare ratios within one run of this script. Exits 1 when a run fails or
the marts differ from the fresh full load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

TOKEN_ENV = "BENCH_NIGHTLY_TOKEN"
RESULT_PREFIX = "NIGHTLY-BENCH-RESULT "
STAGES = {"ingestion": "ingest", "dbt": "dbt", "checks": "checks", "publishing": "publish"}
"""incomaker_elt.run's stage of a step -> the name printed here."""
TARGET_SHARE = 0.10
"""Issue 12: a one-day-later nightly run at `large` within 10% of a full load (wall, requests)."""
_CLIENT_REQUESTS = re.compile(r"loaded \S+: (\d+) requests, (\d+) retries")
"""What the raw assets log once their load is done
(incomaker_elt/orchestration/ingestion_assets.py)."""
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# ------------------------------------------------------------------- the stand-in's process


class CountingApp:
    """The stand-in's ASGI app, counting the requests it answers per operation and status."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], catalogue) -> None:
        self.app = app
        routes = [
            (re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"[^/]+", re.escape(op.path)) + "$"), op)
            for op in catalogue
        ]
        # Fixed paths before templated ones: /rfm/cells before /rfm/{...}
        routes.sort(key=lambda route: (len(route[1].path_params), -len(route[1].path)))
        self.routes = [(pattern, op.name) for pattern, op in routes]
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()

    def operation(self, path: str) -> str:
        return next((name for pattern, name in self.routes if pattern.match(path)), "(no route)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, noting_status)
        operation = self.operation(scope["path"])
        with self._lock:
            self.counts[operation] += 1
            self.statuses[status[0] if status else 0] += 1

    def take(self) -> dict[str, Any]:
        """The counts since the last take, and zero them."""
        with self._lock:
            taken = {"operations": dict(self.counts), "statuses": dict(self.statuses)}
            self.counts.clear()
            self.statuses.clear()
        return taken


def serve_standin(argv: list[str]) -> int:
    """`bench/nightly.py standin --scale S --seed N --today D`: serve the stand-in on a free port,
    print its address, then obey one command a line on stdin: `today YYYY-MM-DD` moves its today,
    `counts` prints the requests answered since the last `counts` (JSON); end of input stops it."""
    import uvicorn

    from incomaker_elt.standin import StandIn, build_world, clear_log
    from incomaker_elt.standin.server import asgi_app

    parser = argparse.ArgumentParser(prog="nightly.py standin")
    parser.add_argument("--scale", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--today", type=date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    standin = StandIn(
        build_world(args.seed, args.scale), today=args.today, token=os.environ[TOKEN_ENV]
    )
    built = time.monotonic() - started
    app = CountingApp(asgi_app(standin), standin.catalogue)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, name="standin-server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            print("the stand-in's server did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"serving http://127.0.0.1:{port} (world built in {built:.1f} s)", flush=True)

    def forget_requests() -> None:
        # The stand-in keeps every request it answered (for tests); a large first load would
        # hold millions. They are counted by CountingApp instead.
        while True:
            standin.clear_log()
            clear_log()
            time.sleep(5.0)

    threading.Thread(target=forget_requests, name="forget-requests", daemon=True).start()
    for line in sys.stdin:
        command, _, value = line.strip().partition(" ")
        if command == "today":
            standin.set_today(date.fromisoformat(value))
            print("ok", flush=True)
        elif command == "counts":
            print(json.dumps(app.take()), flush=True)
    server.should_exit = True
    thread.join(timeout=10)
    return 0


class StandInServer:
    """The parent's handle on the stand-in process: its address, today and request counts."""

    def __init__(self, scale: str, seed: int, today: date, log: Path) -> None:
        self.token = secrets.token_urlsafe(24)
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "standin", "--scale", scale, "--seed", str(seed),
             "--today", today.isoformat()],
            env={**os.environ, TOKEN_ENV: self.token},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            cwd=REPO,
        )  # fmt: skip
        line = self._read()
        found = re.search(r"serving (\S+) \(world built in (\S+) s\)", line)
        if not found:
            self.stop()
            raise SystemExit(f"the stand-in did not start ({line!r}); its errors are in {log}")
        self.base_url = found.group(1)
        self.world_seconds = float(found.group(2))

    def _read(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if not answer:
            raise RuntimeError(f"the stand-in stopped answering (after {command!r})")
        return answer

    def set_today(self, today: date) -> None:
        self._ask(f"today {today.isoformat()}")

    def take_counts(self) -> dict[str, Any]:
        return json.loads(self._ask("counts"))

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


# ------------------------------------------------------------------- one run, in its process


def nightly_tags(defs, instance, settings, today: date) -> dict[str, str]:
    """The tags of the run the nightly schedule requests for `today` (its partition range)."""
    import dagster as dg

    from incomaker_elt.orchestration.schedules import NIGHTLY_SCHEDULE_NAME

    schedule = defs.resolve_schedule_def(NIGHTLY_SCHEDULE_NAME)
    hour, minute = (int(part) for part in settings.schedule_cron.split()[1::-1])
    moment = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=moment.replace(hour=hour, minute=minute)
    )
    requests = schedule.evaluate_tick(context).run_requests or []
    if len(requests) != 1:
        raise RuntimeError(f"the nightly schedule requested {len(requests)} runs for {today}")
    return dict(requests[0].tags)


def table_models(manifest: Path) -> set[str]:
    """dbt unique ids of the models a build writes (tables, incremental), not views."""
    nodes = json.loads(manifest.read_text())["nodes"]
    return {
        unique_id
        for unique_id, node in nodes.items()
        if node.get("resource_type") == "model"
        and node.get("config", {}).get("materialized") in ("table", "incremental")
    }


def run_once(argv: list[str]) -> int:
    """`bench/nightly.py run --kind first|nightly --today D`: one run of the refresh job in this
    process, from the environment's settings; prints its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="nightly.py run")
    parser.add_argument("--kind", choices=("first", "nightly"), required=True)
    parser.add_argument("--today", type=date.fromisoformat, required=True)
    args = parser.parse_args(argv)

    import resource

    import lifecycle
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from incomaker_elt.contract.settings import PROJECT_ROOT, RAW_DATASET, load_settings
    from incomaker_elt.orchestration.publishing import SERVING_ASSET_KEY
    from incomaker_elt.orchestration.run_history import (
        fail_abandoned_runs,
        process_tags,
        recording_instance,
    )
    from incomaker_elt.orchestration.schedules import REFRESH_JOB_NAME, partition_range_tags
    from incomaker_elt.run import ensure_dagster_home, partition_days, step_stages, summarise

    settings = load_settings()
    ensure_dagster_home(settings)
    started = time.monotonic()
    defs = lifecycle.definitions(settings)  # retries while another process rewrites the manifest
    definitions_seconds = time.monotonic() - started
    job = defs.resolve_job_def(REFRESH_JOB_NAME)
    stage_of = step_stages(defs, job)
    with recording_instance(settings.dagster_home) as instance:
        fail_abandoned_runs(instance)
        if args.kind == "first":
            tags = partition_range_tags(*partition_days(settings, args.today))
        else:
            tags = nightly_tags(defs, instance, settings, args.today)
        started = time.monotonic()
        result = job.execute_in_process(
            # Events stay in the run's record; the console only gets warnings.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            instance=instance,
            tags={**tags, **process_tags("bench/nightly.py")},
            raise_on_error=False,
        )
        seconds = time.monotonic() - started
        logs = instance.all_logs(result.run_id)
    summary = summarise(result, seconds)

    step_started: dict[str, float] = {}
    step_seconds: dict[str, float] = {}
    step_spans: dict[str, tuple[float, float]] = {}
    client_requests = client_retries = 0
    for entry in logs:
        found = _CLIENT_REQUESTS.search(entry.user_message or "")
        if found:
            client_requests += int(found.group(1))
            client_retries += int(found.group(2))
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type_value == "STEP_START":
            step_started[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            begun = step_started.get(entry.step_key, entry.timestamp)
            step_seconds[entry.step_key] = entry.timestamp - begun
            step_spans[entry.step_key] = (begun, entry.timestamp)
    stage_seconds: dict[str, float] = {}
    stage_spans: dict[str, list[tuple[float, float]]] = {}
    for step, spent in step_seconds.items():
        stage = STAGES.get(stage_of.get(step, ""), "other")
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + spent
        stage_spans.setdefault(stage, []).append(step_spans[step])

    tables = table_models(PROJECT_ROOT / "dbt_project" / "target" / "manifest.json")
    rows_fetched: dict[str, int] = {}
    dbt_rows: dict[str, int] = {}
    serving_rows = 0
    for event in result.all_events:
        if not event.is_step_materialization:
            continue
        materialization = event.step_materialization_data.materialization
        key, metadata = materialization.asset_key, materialization.metadata
        name = key.to_user_string()
        if key.path[0] == RAW_DATASET and "rows_loaded" in metadata:
            # a load over several partitions materialises each of them with the same figures
            rows_fetched.setdefault(key.path[-1], int(metadata["rows_loaded"].value))
        elif key == SERVING_ASSET_KEY:
            serving_rows = int(metadata["dagster/row_count"].value)
        elif (
            "unique_id" in metadata
            and metadata["unique_id"].value in tables
            and "dagster/row_count" in metadata
        ):
            dbt_rows[name] = int(metadata["dagster/row_count"].value)

    figures = {
        "run_id": result.run_id,
        "success": result.success,
        "failed_steps": summary.failed_steps,
        "checks_failed": summary.checks_failed,
        "days": f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags[ASSET_PARTITION_RANGE_END_TAG]}",
        "seconds": seconds,
        "definitions_seconds": definitions_seconds,
        "stage_seconds": stage_seconds,
        "step_seconds": step_seconds,
        "stage_spans": stage_spans,
        "client_requests": client_requests,
        "client_retries": client_retries,
        "rows_fetched": rows_fetched,
        "dbt_table_rows": dbt_rows,
        "serving_rows": serving_rows,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(RESULT_PREFIX + json.dumps(figures), flush=True)
    return 0 if result.success else 1


# ------------------------------------------------------------------------------ measuring


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * _PAGE_SIZE
        except OSError:
            continue
        pending += children.get(pid, [])
    return total


@contextmanager
def rss_samples(pid: int, interval: float = 0.25) -> Iterator[list[tuple[float, int]]]:
    """Samples the RSS of `pid`'s process tree until the block ends: [(epoch seconds, bytes)]."""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), _tree_rss(pid)))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()


@dataclasses.dataclass
class Warehouse:
    """A warehouse and the DAGSTER_HOME recording its runs, in a folder of their own."""

    folder: Path

    def __post_init__(self) -> None:
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / ".dagster_home" / "dagster.yaml", self.dagster_home / "dagster.yaml")

    @property
    def path(self) -> Path:
        return self.folder / "warehouse" / "incomaker.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.folder / "dagster_home"


@dataclasses.dataclass
class Run:
    label: str
    kind: str
    today: date
    figures: dict[str, Any]
    requests: dict[str, int]
    statuses: dict[str, int]
    peak_mb: float
    stage_peak_mb: dict[str, float]
    """Peak RSS of the process tree while each stage's steps ran."""
    process_seconds: float

    @property
    def seconds(self) -> float:
        return float(self.figures["seconds"])

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def rows_fetched(self) -> int:
        return sum(self.figures["rows_fetched"].values())

    @property
    def rows_written(self) -> int:
        return (
            self.rows_fetched
            + sum(self.figures["dbt_table_rows"].values())
            + self.figures["serving_rows"]
        )

    def stage(self, name: str) -> float:
        return float(self.figures["stage_seconds"].get(name, 0.0))


def measure(
    server: StandInServer, warehouse: Warehouse, kind: str, today: date, label: str, log: Path
) -> Run:
    """One run of the refresh job in a child process against the stand-in at `today`."""
    server.set_today(today)
    server.take_counts()  # nothing before this run counts
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INCOMAKER_") and k != "DAGSTER_HOME"
    }
    env.update(
        INCOMAKER_WAREHOUSE=str(warehouse.path),
        INCOMAKER_BASE_URL=server.base_url,
        INCOMAKER_API_TOKEN=server.token,
        INCOMAKER_SOURCE_TODAY=today.isoformat(),
        DAGSTER_HOME=str(warehouse.dagster_home),
        PYTHONUNBUFFERED="1",
    )
    print(f"\n{label} (today {today}) ...", flush=True)
    started = time.monotonic()
    with log.open("w") as output:
        child = subprocess.Popen(
            [sys.executable, __file__, "run", "--kind", kind, "--today", today.isoformat()],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=output,
            text=True,
        )
        with rss_samples(child.pid) as samples:
            out, _ = child.communicate()
    process_seconds = time.monotonic() - started
    counts = server.take_counts()
    line = next((x for x in out.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if line is None:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(
            f"{label} did not finish (exit {child.returncode}); its log {log}:\n{tail}"
        )
    figures = json.loads(line[len(RESULT_PREFIX) :])
    run = Run(
        label,
        kind,
        today,
        figures,
        counts["operations"],
        counts["statuses"],
        max((rss for _, rss in samples), default=0) / 2**20,
        {
            stage: max((rss for t, rss in samples if any(a <= t <= b for a, b in spans)), default=0)
            / 2**20
            for stage, spans in figures.get("stage_spans", {}).items()
        },
        process_seconds,
    )
    print_run(run, log)
    return run


# ------------------------------------------------------------------------------- printing


def print_run(run: Run, log: Path) -> None:
    f = run.figures
    outcome = "succeeded" if f["success"] else "FAILED"
    print(f"  {run.label}: days {f['days']}, {outcome} in {run.seconds:.1f} s", flush=True)
    for step, message in f["failed_steps"].items():
        print(f"    step {step} failed: {message[:500]}")
    for check in f["checks_failed"]:
        print(f"    check failed: {check}")
    errors = {k: v for k, v in run.statuses.items() if k != "200"}
    print(
        f"    requests {run.total_requests:,} answered by the stand-in"
        + (f" ({errors} not 200)" if errors else "")
        + f"; the client counted {f['client_requests']:,} with {f['client_retries']} retries"
    )
    dbt_rows = f["dbt_table_rows"]
    print(
        f"    rows fetched {run.rows_fetched:,}; rows written {run.rows_written:,} "
        f"(raw {run.rows_fetched:,}, dbt {len(dbt_rows)} tables {sum(dbt_rows.values()):,}, "
        f"serving copy {f['serving_rows']:,})"
    )
    stages = ", ".join(f"{name} {run.stage(name):.1f} s" for name in STAGES.values())
    between = run.seconds - sum(f["stage_seconds"].values())
    print(f"    stages: {stages}; outside steps {between:.1f} s")
    print(
        f"    peak memory {run.peak_mb:,.0f} MB (process tree; the run's own process "
        f"{f['max_rss_mb']:,.0f} MB; by stage: "
        + ", ".join(f"{stage} {mb:,.0f}" for stage, mb in run.stage_peak_mb.items())
        + "); "
        f"definitions loaded in {f['definitions_seconds']:.1f} s; "
        f"process {run.process_seconds:.0f} s"
    )
    print(f"    log: {log}", flush=True)


def print_table(runs: list[Run], full: Run) -> None:
    print(
        f"\n{'run':<22} {'today':<10} {'wall s':>8} {'ingest':>7} {'dbt':>7} {'checks':>7} "
        f"{'publish':>7} {'requests':>10} {'rows fetched':>13} {'rows written':>13} "
        f"{'peak MB':>8} {'wall/full':>9} {'req/full':>9}"
    )
    for run in runs:
        print(
            f"{run.label:<22} {run.today.isoformat():<10} {run.seconds:>8.1f} "
            + " ".join(f"{run.stage(name):>7.1f}" for name in STAGES.values())
            + f" {run.total_requests:>10,} {run.rows_fetched:>13,} {run.rows_written:>13,} "
            f"{run.peak_mb:>8,.0f} {run.seconds / full.seconds:>9.1%} "
            f"{run.total_requests / max(full.total_requests, 1):>9.1%}"
        )


def rereads(op, partitioned: set[str], range_days: int) -> str:
    """What a nightly run asks the API for, for one operation."""
    if op.name in partitioned:
        scope = "per record of the nightly range" if op.parent else "every day"
        return f"{scope}: {range_days} days"
    if op.parent:
        which = "changed" if op.parent.changed_only else "every"
        window = f", {op.lookback_days}-day lookback" if op.window else ""
        return f"per {which} {op.parent.resource} record{window}"
    if op.window:
        return f"{op.lookback_days}-day lookback on {op.window}"
    if op.kind == "aggregate":
        return "snapshot as of today"
    return "listed whole"


def print_operations(run: Run, top: int) -> None:
    from incomaker_elt.contract.catalogue import default_catalogue
    from incomaker_elt.orchestration.ingestion_assets import partitioned_operations

    catalogue = default_catalogue()
    partitioned = {op.name for op in partitioned_operations(catalogue)}
    first, last = (date.fromisoformat(day) for day in run.figures["days"].split(".."))
    range_days = (last - first).days + 1  # the run's partition range
    known = {op.name: op for op in catalogue}
    total = max(run.total_requests, 1)
    print(f"\ntop operations by requests in the {run.label} ({run.total_requests:,} requests):")
    print(f"  {'operation':<32} {'requests':>9} {'share':>6} {'rows':>10}  re-reads")
    ranked = sorted(run.requests.items(), key=lambda item: -item[1])
    for name, count in ranked[:top]:
        op = known.get(name)
        what = rereads(op, partitioned, range_days) if op else ""
        rows = run.figures["rows_fetched"].get(name, 0)
        print(f"  {name:<32} {count:>9,} {count / total:>6.1%} {rows:>10,}  {what}")
    families: Counter[str] = Counter()
    family_rows: Counter[str] = Counter()
    members: dict[str, list[str]] = {}
    for name in sorted(set(run.requests) | set(run.figures["rows_fetched"])):
        op = known.get(name)
        family = rereads(op, partitioned, range_days) if op else name
        families[family] += run.requests.get(name, 0)
        family_rows[family] += run.figures["rows_fetched"].get(name, 0)
        members.setdefault(family, []).append(name)
    print(f"  by what they re-read:{'requests':>33} {'share':>6} {'rows':>10}  operations")
    for family, count in families.most_common():
        names = members[family]
        listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        print(
            f"    {family:<44} {count:>9,} {count / total:>6.1%} {family_rows[family]:>10,}"
            f"  {listed}"
        )


# ----------------------------------------------------------------------------------- main


def _arguments() -> argparse.Namespace:
    from incomaker_elt.standin import DEFAULT_TODAY

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", default="medium", choices=("small", "medium", "large"))
    p.add_argument("--seed", type=int, default=1, help="seed of the stand-in's world")
    p.add_argument("--first-today", type=date.fromisoformat, default=DEFAULT_TODAY)
    p.add_argument(
        "--nights",
        type=int,
        nargs="+",
        default=[1, 7],
        help="days today moves forward before each nightly run (default: 1 then 7)",
    )
    p.add_argument("--top", type=int, default=12, help="operations listed by requests")
    p.add_argument("--keep", type=Path, help="keep warehouses and logs in this folder")
    p.add_argument(
        "--commit",
        help="measure the pipeline as committed at this revision (HEAD, say), from a copy, not "
        "the working tree (others' half-done edits in a shared tree cannot break the runs)",
    )
    return p.parse_args()


def from_commit(revision: str) -> int:
    """Run this script again on a copy of the repository at `revision`: every import, the dbt
    project and the runs come from the copy, and this script measures it."""
    folder = Path(tempfile.mkdtemp(prefix="bench-nightly-tree-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        script = folder / "bench" / "nightly.py"
        shutil.copy(__file__, script)
        argv = sys.argv[1:]
        at = argv.index("--commit")
        del argv[at : at + 2]
        print(f"measuring {revision} ({_revision(revision)}) from a copy in {folder}", flush=True)
        env = {**os.environ, "PYTHONPATH": str(folder)}
        return subprocess.call([sys.executable, str(script), *argv], env=env, cwd=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _revision(revision: str) -> str:
    found = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %s", revision],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip()[:80]


def main() -> int:
    args = _arguments()
    if args.commit:
        return from_commit(args.commit)
    from incomaker_elt.orchestration.transform import prepare_manifest

    load_before = os.getloadavg()
    print(
        f"nightly bench: {args.scale} world {args.seed}, first load at today {args.first_today}, "
        f"then nights +{', +'.join(map(str, args.nights))} day(s); "
        f"load average before {load_before[0]:.2f} / {load_before[1]:.2f} (1 / 5 min) "
        f"on {os.cpu_count()} cores",
        flush=True,
    )
    prepare_manifest()
    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        server = StandInServer(args.scale, args.seed, args.first_today, root / "standin.log")
        print(f"stand-in at {server.base_url} (world built in {server.world_seconds:.1f} s)")
        try:
            nightly = Warehouse(root / "nightly")
            today = args.first_today
            runs = [
                measure(server, nightly, "first", today, "first full load", root / "1-first.log")
            ]
            for number, days in enumerate(args.nights, 2):
                today += timedelta(days=days)
                label = f"nightly +{days} day{'s' if days > 1 else ''}"
                log = root / f"{number}-nightly-{today}.log"
                runs.append(measure(server, nightly, "nightly", today, label, log))
            fresh = Warehouse(root / "fresh")
            reference = measure(
                server, fresh, "first", today, "fresh full load", root / "fresh-full-load.log"
            )
        finally:
            server.stop()
        load_after = os.getloadavg()
        return report(args, runs, reference, nightly, fresh, load_before, load_after)


def report(
    args: argparse.Namespace,
    runs: list[Run],
    reference: Run,
    nightly: Warehouse,
    fresh: Warehouse,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> int:
    import lifecycle

    full = runs[0]
    if args.keep:
        (args.keep / "runs.json").write_text(
            json.dumps([dataclasses.asdict(run) for run in [*runs, reference]], default=str)
        )
    print_table([*runs, reference], full)
    for run in runs[1:]:
        print_operations(run, args.top)

    failed = [run.label for run in [*runs, reference] if not run.figures["success"]]
    differences = lifecycle.mart_differences(nightly.path, fresh.path)
    repeated = lifecycle.duplicate_keys(nightly.path)
    print()
    if differences:
        print("lifecycle property BROKEN: the marts after the nightly runs differ from a fresh "
              f"full load at {reference.today}")  # fmt: skip
        print(lifecycle.describe_differences(differences))
    else:
        print(f"lifecycle property holds: every mart equals a fresh full load at {reference.today}")
    if repeated:
        print(f"raw keys held twice: {repeated}")

    quiet = max(load_before[0], load_after[0]) < 1.0
    print(
        f"machine: load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"(5 min: {load_before[1]:.2f}, {load_after[1]:.2f}) on {os.cpu_count()} cores: "
        + ("quiet" if quiet else "NOT quiet (others were working; wall times are inflated)")
    )
    one_day = runs[1] if len(runs) > 1 else None
    if one_day is not None:
        wall = one_day.seconds / full.seconds
        requests = one_day.total_requests / max(full.total_requests, 1)
        met = wall <= TARGET_SHARE and requests <= TARGET_SHARE
        where = "" if args.scale == "large" else f" (the target is for large; this is {args.scale})"
        print(
            f"VERDICT: the {one_day.label} run took {wall:.1%} of the full load's wall time and "
            f"made {requests:.1%} of its requests; target <= {TARGET_SHARE:.0%} of both: "
            + ("MET" if met else "MISSED")
            + where
        )
    if failed:
        print(f"runs that failed: {', '.join(failed)}")
    return 1 if failed or differences or repeated else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "standin":
        sys.exit(serve_standin(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        sys.exit(run_once(sys.argv[2:]))
    sys.exit(main())
