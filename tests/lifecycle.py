"""The warehouse's whole lifecycle as a property: nothing a night can do bricks it.

A seeded random sequence of what happens to a warehouse in production (a first full load, nightly
runs while the API's today moves on, backfills of arbitrary days of arbitrary raw tables through
the Dagster UI's partitioned multi-asset, flaky API answers, processes killed with SIGKILL in the
middle of ingesting, of dbt and of publishing), then one clean nightly run. Afterwards:

- every mart equals, row for row, a fresh full load at the same today (tests/warehouse_compare.py);
- no raw table holds a primary key (incomaker_elt.ingestion.raw_columns.primary_key) twice, nor
  a child table a (parent, list index) twice;
- the serving copy, read like a dashboard reads it during and after every step, always opens,
  holds every mart, and its marts are those of a completed publication: an earlier one or the
  current one, never half of one.

The stand-in is served over HTTP from this process (`StandIn.serve()`), so that its today can move
between steps (`StandIn.set_today`) and its faults change per step, while the killed processes
(`incomaker-elt ingest`, `incomaker-elt transform`, a run of the refresh job) reach it as the real
API. Runs that are not killed execute the refresh job in this process, as the UI's runs execute it.

Nights follow the schedule's rule: today moves one day at a time, and every today gets a completed
nightly run (a killed nightly run is followed by its rerun at the same today), because a nightly
run re-fetches only the 30 days before it: a missed night would freeze a day with the late
conversions it had then, which no fresh load would.

Used by tests/test_lifecycle.py (small, in `make test`) and bench/lifecycle.py (longer). Also a
script: `python tests/lifecycle.py run-job ...` is the run that a kill step kills.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb

from incomaker_elt.contract.settings import PROJECT_ROOT, Settings

TOKEN = "lifecycle-token"
MARTS_SCHEMA = "marts"
PYTHON = sys.executable
HERE = Path(__file__).resolve()

FIRST_LOAD = "first_load"
NIGHTLY = "nightly"
BACKFILL = "backfill"
KILL_INGEST = "kill_ingest"
KILL_TRANSFORM = "kill_transform"
KILL_RUN = "kill_run"
CLEAN_RUN = "clean_run"
DISRUPTIONS = (BACKFILL, KILL_INGEST, KILL_TRANSFORM, KILL_RUN)

KILL_STAGES = ("ingest", "dbt", "publish")
STAGE_STEPS = {
    "ingest": ("incomaker_raw_events", "incomaker_raw_snapshots"),
    "dbt": ("incomaker_dbt",),
    "publish": ("incomaker_serving",),
}
"""Which Dagster step keys begin a stage of the run (matched as substrings of the step key)."""

_CAUSE = re.compile(r"failed|error|exception", re.IGNORECASE)
"""Lines of a failed process's output that say why (the rest is progress)."""
ERROR_FAULTS = ("429", "500", "502", "503", "truncate")
_STEP_EVENT = re.compile(
    r"- (?P<run>[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}) - \d+ - (?P<step>\S+) - "
    r"(?P<event>STEP_START|STEP_SUCCESS|STEP_FAILURE) -"
)
"""A Dagster console line of a step event: `... - <run id> - <pid> - <step> - STEP_START - ...`"""


# ------------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class FaultSpec:
    """What the stand-in does wrong during a step: a share of failing requests, and drift."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ERROR_FAULTS
    drift: bool = False
    seed: int = 0

    def faults(self):  # -> standin.Faults
        from incomaker_elt.standin import Faults

        return Faults(
            rate=self.rate, kinds=self.kinds, drift=self.drift, seed=self.seed, retry_after=1
        )

    def text(self) -> str:
        if not self.rate and not self.drift:
            return "no faults"
        parts = [f"{self.rate:.1%} of requests fail ({','.join(self.kinds)}; seed {self.seed})"]
        return " + ".join(parts + (["drift"] if self.drift else []))


@dataclass(frozen=True)
class Step:
    """One thing that happens to the warehouse. Dates are ISO days; `today` is the API's."""

    kind: str
    today: date
    first: date | None = None
    """Partition range (runs and backfills) or the first day an ingest asks for."""
    last: date | None = None
    tables: tuple[str, ...] = ()
    """A backfill's raw tables (partitioned operations)."""
    build: bool = False
    """The run also builds the dbt models, runs the checks and publishes the serving copy."""
    faults: FaultSpec = FaultSpec()
    kill_stage: str = ""
    """kill_run: the stage of the run during which it is killed (ingest, dbt, publish)."""
    kill_after: float = 0.0
    """Seconds after the stage (kill_run) or the process (kill_ingest, kill_transform) began."""

    def text(self) -> str:
        days = f" days {self.first}..{self.last}" if self.first else ""
        what = {
            FIRST_LOAD: "first full load",
            NIGHTLY: "nightly run",
            BACKFILL: f"backfill of {', '.join(self.tables)}",
            KILL_INGEST: f"`incomaker-elt ingest` killed {self.kill_after:.1f} s in",
            KILL_TRANSFORM: f"`incomaker-elt transform` killed {self.kill_after:.1f} s in",
            KILL_RUN: f"nightly run killed {self.kill_after:.1f} s into {self.kill_stage}",
            CLEAN_RUN: "clean nightly run",
        }[self.kind]
        built = " + dbt + publish" if self.build else ""
        return f"{what} (today {self.today}{days}{built}; {self.faults.text()})"


@dataclass(frozen=True)
class Shape:
    """How long and how rough a generated lifecycle is."""

    nights: int = 2
    """Nightly runs after the first load; today moves one day before each. The last is clean."""
    disruptions: int = 3
    """Backfills and kills, spread over the nights."""
    first_today: date = date(2026, 6, 28)
    partitions_start: date = date(2025, 1, 1)
    kinds: tuple[str, ...] = DISRUPTIONS
    kill_stages: tuple[str, ...] = KILL_STAGES
    max_dbt_kills: int = 1
    """Kills that cost a dbt build (transform, or a run killed in dbt or publishing)."""
    first_load_builds: bool = True
    nightly_build_share: float = 0.0
    """Share of the nights between the first and the clean run that also build and publish."""
    fault_rate: float = 0.005
    drift_share: float = 0.25
    ingest_kill_seconds: tuple[float, float] = (1.0, 25.0)
    transform_kill_seconds: tuple[float, float] = (2.0, 15.0)
    stage_kill_seconds: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"ingest": (0.0, 15.0), "dbt": (0.5, 12.0), "publish": (0.0, 1.5)}
    )
    longest_backfill_days: int = 120
    first_load_via: str = "run"
    """How the first load and the fresh reference load run: `run`, the refresh job over the whole
    history as `incomaker-elt run` runs it (one Dagster event per partition and table: minutes
    even on `small`), or `commands`, `incomaker-elt ingest` then `transform` and a publish, in
    this process (what `make test` can afford)."""

    @property
    def final_today(self) -> date:
        return self.first_today + timedelta(days=self.nights)


def plan_lifecycle(seed: int, shape: Shape, partitioned: Sequence[str]) -> list[Step]:
    """The steps of lifecycle `seed`: the same seed and shape always give the same steps."""
    rng = random.Random(seed)

    def faults() -> FaultSpec:
        kinds = tuple(k for k in ERROR_FAULTS if rng.random() < 0.6) or ("503",)
        return FaultSpec(
            rate=shape.fault_rate,
            kinds=kinds,
            drift=rng.random() < shape.drift_share,
            seed=rng.randrange(1 << 30),
        )

    def nightly_days(today: date) -> tuple[date, date]:
        return max(shape.partitions_start, today - timedelta(days=30)), today

    def between(bounds: tuple[float, float]) -> float:
        return round(rng.uniform(*bounds), 1)

    # Disruptions go into the nights they precede (night 0: right after the first load); a
    # killed run is that night's nightly run, killed, then run again. Kills that cost a dbt
    # build (transform, a run killed in dbt or publishing) are counted as they are chosen.
    dbt_kills = 0
    per_night: dict[int, list[tuple[str, str]]] = {}
    for _ in range(shape.disruptions):
        kinds = list(shape.kinds)
        if dbt_kills >= shape.max_dbt_kills:
            kinds = [k for k in kinds if k != KILL_TRANSFORM]
            if "ingest" not in shape.kill_stages:
                kinds = [k for k in kinds if k != KILL_RUN]
        kind = rng.choice(kinds)
        stage = ""
        if kind == KILL_RUN:
            stages = list(shape.kill_stages)
            if dbt_kills >= shape.max_dbt_kills:
                stages = [s for s in stages if s == "ingest"]
            stage = rng.choice(stages)
        if kind == KILL_TRANSFORM or stage in ("dbt", "publish"):
            dbt_kills += 1
        per_night.setdefault(rng.randrange(shape.nights + 1), []).append((kind, stage))

    today = shape.first_today
    first, last = shape.partitions_start, today
    steps = [Step(FIRST_LOAD, today, first, last, build=shape.first_load_builds, faults=faults())]
    for night in range(shape.nights + 1):
        if night:
            today += timedelta(days=1)
        for kind, stage in per_night.get(night, []):
            if kind == BACKFILL:
                tables = tuple(sorted(rng.sample(partitioned, rng.randint(1, len(partitioned)))))
                start_day = shape.partitions_start + timedelta(
                    days=rng.randrange((today - shape.partitions_start).days + 1)
                )
                end_day = min(
                    today, start_day + timedelta(days=rng.randrange(shape.longest_backfill_days))
                )
                steps.append(Step(BACKFILL, today, start_day, end_day, tables, faults=faults()))
            elif kind == KILL_INGEST:
                steps.append(
                    Step(
                        KILL_INGEST,
                        today,
                        shape.partitions_start,
                        today,
                        faults=faults(),
                        kill_after=between(shape.ingest_kill_seconds),
                    )
                )
            elif kind == KILL_TRANSFORM:
                steps.append(
                    Step(KILL_TRANSFORM, today, kill_after=between(shape.transform_kill_seconds))
                )
            elif kind == KILL_RUN:
                first, last = nightly_days(today)
                steps.append(
                    Step(
                        KILL_RUN,
                        today,
                        first,
                        last,
                        build=stage != "ingest",
                        faults=faults(),
                        kill_stage=stage,
                        kill_after=between(shape.stage_kill_seconds[stage]),
                    )
                )
        if night and night < shape.nights:
            first, last = nightly_days(today)
            build = rng.random() < shape.nightly_build_share
            steps.append(Step(NIGHTLY, today, first, last, build=build, faults=faults()))
    first, last = nightly_days(today)
    steps.append(Step(CLEAN_RUN, today, first, last, build=True))
    return steps


# ------------------------------------------------------------------------ what steps leave


@dataclass
class StepOutcome:
    step: Step
    seconds: float
    result: str
    """succeeded | failed: <why> | killed ... | finished before the kill"""
    duplicates: list[str] = field(default_factory=list)
    """Raw tables holding a key twice after this step (a diagnostic; asserted only at the end)."""

    def line(self, number: int) -> str:
        extra = f"; duplicate keys in {', '.join(self.duplicates)}" if self.duplicates else ""
        return f"  {number:>2}. {self.step.text()}: {self.result} [{self.seconds:.1f} s]{extra}"


@dataclass
class ServingLook:
    """One look at the serving copy: which publication it is and what its marts hold."""

    when: str
    run_id: str | None = None
    marts: dict[str, tuple[int, int]] | None = None
    """Per mart: (rows, sum of row hashes); None when the copy could not be read."""
    error: str = ""


@dataclass
class LifecycleOutcome:
    seed: int
    shape: Shape
    steps: list[StepOutcome]
    warehouse: Path
    reference: Path
    serving_violations: list[str]
    seconds: float
    reference_seconds: float

    def plan_text(self) -> str:
        lines = [f"lifecycle seed {self.seed} ({len(self.steps)} steps, {self.seconds:.0f} s):"]
        lines += [outcome.line(i) for i, outcome in enumerate(self.steps, 1)]
        lines.append(f"  killed processes' output: {self.warehouse.parent.parent}/step-*.log")
        lines.append(
            f"  reproduce: INCOMAKER_LIFECYCLE_SEEDS={self.seed} .venv/bin/pytest "
            "tests/test_lifecycle.py  (or bench/lifecycle.py --seeds "
            f"{self.seed} with the same shape)"
        )
        return "\n".join(lines)


# -------------------------------------------------------------------- the property's checks


def mart_differences(warehouse: Path, reference: Path) -> list:
    """The marts whose rows differ from the reference's (warehouse_compare.Difference)."""
    from warehouse_compare import compare_warehouses

    return compare_warehouses(warehouse, reference, schemas=(MARTS_SCHEMA,))


def describe_differences(differences: Sequence, examples: int = 3) -> str:
    from warehouse_compare import describe

    return describe(differences, examples) + "\n  (left: the lifecycle's, right: the fresh load's)"


def duplicate_keys(warehouse: Path, examples: int = 3) -> dict[str, str]:
    """Raw tables holding a key twice: {table: 'key (a, b): N keys repeated, e.g. ...'}.

    Roots are keyed by the catalogue's primary key (aggregates by snapshot day and parameters
    first); child tables (`<table>__<list>`) by their parent row and list position.
    """
    from incomaker_elt.contract.catalogue import default_catalogue
    from incomaker_elt.contract.settings import RAW_DATASET
    from incomaker_elt.ingestion.raw_columns import primary_key

    found: dict[str, str] = {}
    con = open_when_free(warehouse)
    try:
        tables = {
            name: {
                c
                for (c,) in con.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema = ? and table_name = ?",
                    [RAW_DATASET, name],
                ).fetchall()
            }
            for (name,) in con.execute(
                "select table_name from information_schema.tables where table_schema = ?",
                [RAW_DATASET],
            ).fetchall()
        }
        keys: dict[str, tuple[str, ...]] = {}
        for op in default_catalogue():
            key = primary_key(op)
            if key and op.name in tables:
                keys[op.name] = key
        for name, columns in tables.items():
            if "__" in name and {"_dlt_parent_id", "_dlt_list_idx"} <= columns:
                keys[name] = ("_dlt_parent_id", "_dlt_list_idx")
        for name, key in sorted(keys.items()):
            missing = [c for c in key if c not in tables[name]]
            if missing:
                found[name] = f"key columns {missing} missing from the table"
                continue
            columns = ", ".join(f'"{c}"' for c in key)
            table = f'{RAW_DATASET}."{name}"'
            (repeated,) = con.execute(
                f"select count(*) from (select 1 from {table} group by {columns} "
                "having count(*) > 1)"
            ).fetchone()
            if repeated:
                rows = con.execute(
                    f"select {columns}, count(*) from {table} group by {columns} "
                    f"having count(*) > 1 order by count(*) desc limit {examples}"
                ).fetchall()
                found[name] = f"key ({', '.join(key)}): {repeated} keys repeated, e.g. {rows}"
    finally:
        con.close()
    return found


WAREHOUSE_WAIT_SECONDS = 120.0
"""How long a check waits for a process that still holds the working warehouse (a dbt left
running by its run, say) before it reports that instead of reading."""


def open_when_free(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """The working warehouse read-only, once no other process writes it (within the wait)."""
    from incomaker_elt.orchestration.warehouse import connect

    return connect(warehouse, read_only=True, timeout=WAREHOUSE_WAIT_SECONDS)


def property_problems(outcome: LifecycleOutcome) -> str:
    """Everything that breaks the property after `outcome`, readable; empty when it holds."""
    problems: list[str] = []
    last = outcome.steps[-1]
    if last.result != "succeeded":
        problems.append(f"the clean run did not succeed: {last.result}")
    differences = mart_differences(outcome.warehouse, outcome.reference)
    if differences:
        problems.append(describe_differences(differences))
    repeated = duplicate_keys(outcome.warehouse)
    if repeated:
        problems.append("raw keys held twice:")
        problems += [f"  {table}: {what}" for table, what in repeated.items()]
    if outcome.serving_violations:
        problems.append("the serving copy was not always a complete publication:")
        problems += [f"  {v}" for v in outcome.serving_violations]
    return "\n".join(problems)


def marts_fingerprint(
    con: duckdb.DuckDBPyConnection, catalog: str | None = None
) -> dict[str, tuple[int, int]]:
    """Per mart table: (rows, sum of row hashes): equal multisets of rows give equal values."""
    where = "table_schema = 'marts'" + (f" and table_catalog = '{catalog}'" if catalog else "")
    prefix = f'"{catalog}".' if catalog else ""
    names = [
        n
        for (n,) in con.execute(
            f"select table_name from information_schema.tables where {where} order by 1"
        ).fetchall()
    ]
    result: dict[str, tuple[int, int]] = {}
    for name in names:
        count, total = con.execute(
            f'select count(*), coalesce(sum(hash(t)::hugeint), 0) from {prefix}marts."{name}" t'
        ).fetchone()
        result[name] = (int(count), int(total))
    return result


def working_marts(warehouse: Path) -> dict[str, tuple[int, int]] | None:
    """The working warehouse's marts as the serving copy would hold them (None: no marts)."""
    if not warehouse.is_file():
        return None
    con = open_when_free(warehouse)
    try:
        found = marts_fingerprint(con)
    finally:
        con.close()
    return found or None


def look_at_serving(serving: Path, expected_marts: set[str], when: str) -> ServingLook | None:
    """What a dashboard would see now; None when nothing was ever published."""
    if not serving.exists():
        return None
    try:
        con = duckdb.connect(str(serving), read_only=True)
        try:
            (run_id,) = con.execute("select run_id from main.publication").fetchone()
            marts = marts_fingerprint(con)
        finally:
            con.close()
    except Exception as exc:  # a half-written or locked copy is exactly what is looked for
        if not serving.exists():
            return None
        return ServingLook(when, error=f"{type(exc).__name__}: {exc}")
    missing = sorted(expected_marts - set(marts))
    if missing:
        return ServingLook(when, run_id, marts, error=f"marts missing: {missing}")
    return ServingLook(when, run_id, marts)


class ServingWatch:
    """Looks at the serving copy every `interval` seconds in a thread, as a dashboard would."""

    def __init__(self, serving: Path, expected_marts: set[str], interval: float = 0.5) -> None:
        self.serving = serving
        self.expected = expected_marts
        self.interval = interval
        self.looks: list[ServingLook] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.label = ""

    def _loop(self) -> None:
        while not self._stop.is_set():
            look = look_at_serving(self.serving, self.expected, f"during {self.label}")
            if look is not None and (not self.looks or self.looks[-1] != look):
                self.looks.append(look)
            self._stop.wait(self.interval)

    @contextmanager
    def during(self, label: str) -> Iterator[None]:
        self.label = label
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="serving-watch", daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(timeout=60)


# -------------------------------------------------------------------------- running steps


def lifecycle_settings(root: Path, base_url: str) -> Settings:
    return Settings(
        warehouse_path=root / "warehouse" / "incomaker.duckdb",
        base_url=base_url,
        api_token=TOKEN,
        catalogue_overrides=None,
        dagster_home=root / "dagster_home",
    )


def subprocess_env(settings: Settings) -> dict[str, str]:
    """This test's settings and nothing of the caller's INCOMAKER_* environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INCOMAKER_") and k != "DAGSTER_HOME"
    }
    env.update(
        INCOMAKER_WAREHOUSE=str(settings.warehouse_path),
        INCOMAKER_BASE_URL=str(settings.base_url),
        INCOMAKER_API_TOKEN=str(settings.api_token),
        INCOMAKER_PARTITIONS_START=settings.partitions_start.isoformat(),
        DAGSTER_HOME=str(settings.dagster_home),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Killed:
    killed: bool
    seconds: float
    returncode: int | None
    stage_seen: bool
    run_id: str | None
    succeeded_steps: list[str]
    tail: list[str]

    def result(self, stage: str, delay: float) -> str:
        if self.killed:
            where = f" into {stage}" if stage else ""
            return f"killed (SIGKILL) {delay:.1f} s{where}, {self.seconds:.1f} s after start"
        if self.returncode == 0:
            return "finished before the kill"
        causes = [
            line.strip()
            for line in self.tail
            if _CAUSE.search(line) and " - DEBUG - " not in line and "Traceback" not in line
        ]
        why = " | ".join(dict.fromkeys(causes[-4:] or self.tail[-3:]))
        return f"failed before the kill (exit {self.returncode}): {why}"


def run_and_kill(
    command: Sequence[str],
    env: dict[str, str],
    delay: float,
    stage_steps: Sequence[str] = (),
    limit: float = 900.0,
    output: Path | None = None,
) -> Killed:
    """Start `command` in its own process group; SIGKILL the group `delay` seconds after it
    starts, or after a Dagster step whose key contains one of `stage_steps` starts. Its whole
    output goes to `output` when given."""
    started = time.monotonic()
    log = open(output, "w") if output else None  # noqa: SIM115 - closed after the reader
    process = subprocess.Popen(
        list(command),
        env=env,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    stage = threading.Event()
    tail: list[str] = []
    run_ids: list[str] = []
    succeeded: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if log:
                log.write(line)
            tail.append(line.rstrip()[:400])
            del tail[:-300]
            match = _STEP_EVENT.search(line)
            if not match:
                continue
            if not run_ids:
                run_ids.append(match["run"])
            name = match["step"]
            if match["event"] == "STEP_SUCCESS":
                succeeded.append(name)
            if match["event"] == "STEP_START" and any(s in name for s in stage_steps):
                stage.set()

    reader = threading.Thread(target=read, name="kill-target-output", daemon=True)
    reader.start()
    if stage_steps:
        while not stage.wait(0.05):
            if process.poll() is not None or time.monotonic() - started > limit:
                break
    deadline = time.monotonic() + delay
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = False
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        killed = True
    process.wait()
    reader.join(timeout=10)
    if log:
        log.close()
    return Killed(
        killed,
        time.monotonic() - started,
        None if killed else process.returncode,
        stage.is_set(),
        run_ids[0] if run_ids else None,
        succeeded,
        tail,
    )


class Lifecycle:
    """One warehouse living through `steps` against one stand-in served from this process."""

    def __init__(self, root: Path, world, report: Callable[[str], None] = print) -> None:
        self.root = root
        self.world = world
        self.report = report

    def run(
        self,
        seed: int,
        shape: Shape,
        steps: Sequence[Step],
        reference: Path,
        reference_seconds: float,
    ) -> LifecycleOutcome:
        import dagster as dg

        from incomaker_elt.standin import StandIn

        started = time.monotonic()
        standin = StandIn(self.world, today=steps[0].today, token=TOKEN)
        outcomes: list[StepOutcome] = []
        with standin.serve(host="127.0.0.1", port=0) as base_url:
            settings = dataclasses.replace(
                lifecycle_settings(self.root, base_url), partitions_start=shape.partitions_start
            )
            settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
            defs = definitions(settings)
            expected = mart_names()
            watch = ServingWatch(settings.serving_warehouse_path, expected)
            versions = Versions()
            with dg.DagsterInstance.ephemeral() as instance:
                executor = StepExecutor(settings, defs, instance, shape.first_load_via)
                for number, step in enumerate(steps, 1):
                    standin.set_today(step.today)
                    standin.faults = step.faults.faults()
                    before = look_at_serving(settings.serving_warehouse_path, expected, "before")
                    step_started = time.monotonic()
                    with watch.during(f"step {number}"):
                        result, published_run = executor.execute(
                            step, self.root / f"step-{number:02d}-{step.kind}.log"
                        )
                    seconds = time.monotonic() - step_started
                    standin.faults = FaultSpec().faults()
                    after = look_at_serving(
                        settings.serving_warehouse_path, expected, f"after step {number}"
                    )
                    versions.account(
                        number, step, before, after, published_run, watch, settings.warehouse_path
                    )
                    duplicates = step_duplicates(settings.warehouse_path)
                    outcome = StepOutcome(step, seconds, result, duplicates)
                    outcomes.append(outcome)
                    self.report(outcome.line(number))
        return LifecycleOutcome(
            seed,
            shape,
            outcomes,
            settings.warehouse_path,
            reference,
            versions.violations,
            time.monotonic() - started,
            reference_seconds,
        )


def step_duplicates(warehouse: Path) -> list[str]:
    """The raw tables holding a key twice after a step (or why they could not be read)."""
    if not warehouse.exists():
        return []
    try:
        return sorted(duplicate_keys(warehouse))
    except Exception as exc:  # e.g. a process the step left behind still holds the file
        return [f"(raw tables unreadable: {type(exc).__name__}: {str(exc)[:300]})"]


class Versions:
    """The serving copies that completed publications left, and every look that was not one."""

    def __init__(self) -> None:
        self.published: dict[str, dict[str, tuple[int, int]]] = {}
        """run id -> marts of the copy that run published (as seen right after its step)."""
        self.violations: list[str] = []

    def account(
        self,
        number: int,
        step: Step,
        before: ServingLook | None,
        after: ServingLook | None,
        published_run: str | None,
        watch: ServingWatch,
        warehouse: Path,
    ) -> None:
        if (
            after is not None
            and not after.error
            and after.run_id
            and after.run_id not in self.published
        ):
            # A new copy: a completed publication of this step's run, whose marts are the
            # working warehouse's as that run left them.
            try:
                working = working_marts(warehouse)
            except Exception as exc:  # still held by a process the step left behind
                working = None
                self.violations.append(
                    f"after step {number} ({step.kind}) the working warehouse could not be read "
                    f"to compare the new serving copy with: {type(exc).__name__}: {exc}"
                )
            if after.run_id != published_run:
                self.violations.append(
                    f"after step {number} ({step.kind}) the serving copy is of run {after.run_id}, "
                    f"which did not complete its publication (this step's run: {published_run})"
                )
            elif working != after.marts:
                self.violations.append(
                    f"after step {number} ({step.kind}) the serving copy's marts are not those "
                    f"its run built: {_fingerprint_difference(after.marts, working)}"
                )
            self.published[after.run_id] = after.marts or {}
        looks = [*watch.looks, *([after] if after else [])]
        watch.looks.clear()
        if before is not None and after is None:
            self.violations.append(f"step {number} ({step.kind}) removed the serving copy")
        for look in looks:
            if look.error:
                self.violations.append(f"{look.when}: the serving copy {look.error}")
            elif look.run_id not in self.published:
                self.violations.append(
                    f"{look.when}: a serving copy of run {look.run_id}, no completed publication"
                )
            elif self.published[look.run_id] != look.marts:
                self.violations.append(
                    f"{look.when}: the serving copy of run {look.run_id} changed: "
                    f"{_fingerprint_difference(look.marts, self.published[look.run_id])}"
                )


def _fingerprint_difference(
    seen: dict[str, tuple[int, int]] | None, expected: dict[str, tuple[int, int]] | None
) -> str:
    seen, expected = seen or {}, expected or {}
    differ = [
        f"{name} (rows {seen.get(name, (None,))[0]} vs {expected.get(name, (None,))[0]})"
        for name in sorted(set(seen) | set(expected))
        if seen.get(name) != expected.get(name)
    ]
    return ", ".join(differ[:5]) or "(equal)"


class StepExecutor:
    """Carries out one step: in-process Dagster runs, or killed subprocesses."""

    def __init__(self, settings: Settings, defs, instance, first_load_via: str) -> None:
        self.settings = settings
        self.first_load_via = first_load_via
        self.defs = defs
        self.instance = instance
        graph = defs.resolve_asset_graph()
        self.raw_keys = [
            k
            for k in graph.get_all_asset_keys()
            if k.path[0] == "incomaker_raw" and graph.get(k).is_materializable
        ]

    def execute(self, step: Step, output: Path | None = None) -> tuple[str, str | None]:
        """(what happened, the run id whose publication completed in this step or None).
        A killed process's output goes to `output`."""
        if step.kind == FIRST_LOAD and self.first_load_via == "commands":
            return load_by_commands(self.settings, step, f"first-load-{step.today}")
        if step.kind in (FIRST_LOAD, NIGHTLY, CLEAN_RUN):
            return self._run(step, None if step.build else self.raw_keys)
        if step.kind == BACKFILL:
            import dagster as dg

            keys = [dg.AssetKey(["incomaker_raw", t]) for t in step.tables]
            return self._run(step, keys)
        env = subprocess_env(self.settings)
        if step.kind == KILL_INGEST:
            command = [
                PYTHON, "-m", "incomaker_elt.cli", "ingest",
                "--start-date", str(step.first), "--end-date", str(step.last),
            ]  # fmt: skip
            killed = run_and_kill(command, env, step.kill_after, output=output)
            return killed.result("", step.kill_after), None
        if step.kind == KILL_TRANSFORM:
            command = [PYTHON, "-m", "incomaker_elt.cli", "transform"]
            killed = run_and_kill(command, env, step.kill_after, output=output)
            return killed.result("", step.kill_after), None
        if step.kind == KILL_RUN:
            command = [
                PYTHON,
                str(HERE),
                "run-job",
                "--first",
                str(step.first),
                "--last",
                str(step.last),
            ]
            if step.build:
                command.append("--build")
            stage = STAGE_STEPS[step.kill_stage]
            killed = run_and_kill(command, env, step.kill_after, stage, output=output)
            published = (
                killed.run_id
                if any("incomaker_serving" in s for s in killed.succeeded_steps)
                else None
            )
            if killed.killed and not killed.stage_seen:
                return f"killed before reaching {step.kill_stage} (it failed or hung)", published
            # a kill just after the copy replaced the serving file, before Dagster logged it
            return killed.result(step.kill_stage, step.kill_after), published or killed.run_id
        raise ValueError(f"unknown step kind {step.kind!r}")

    def _run(self, step: Step, selection) -> tuple[str, str | None]:
        from incomaker_elt.run import summarise

        started = time.monotonic()
        result = execute_job(self.defs, self.instance, step.first, step.last, selection)
        summary = summarise(result, time.monotonic() - started)
        published = result.run_id if any(k.startswith("serving/") for k in summary.rows) else None
        if summary.success:
            return "succeeded", published
        failed = "; ".join(f"{k}: {v}" for k, v in summary.failed_steps.items())
        checks = ", ".join(summary.checks_failed)
        return f"failed: {failed or ''}{' checks failed: ' + checks if checks else ''}"[
            :2000
        ], published


def load_by_commands(settings: Settings, step: Step, run_id: str) -> tuple[str, str | None]:
    """What `incomaker-elt ingest` and `incomaker-elt transform` do, then a publish as the job's
    last step does it; in this process. (what happened, the publication's run id or None)"""
    from incomaker_elt.ingestion.pipeline import run_ingestion
    from incomaker_elt.orchestration import transform
    from incomaker_elt.orchestration.serving import publish_serving_warehouse

    assert step.first is not None and step.last is not None
    try:
        run_ingestion(settings, start=step.first, end=step.last)
        if not step.build:
            return "succeeded", None
        transform.build(settings)
        publish_serving_warehouse(
            settings.warehouse_path, settings.serving_warehouse_path, run_id=run_id
        )
    except Exception as exc:  # the step's outcome is reported; the property decides
        return f"failed: {type(exc).__name__}: {exc}"[:2000], None
    return "succeeded", run_id if step.build else None


def execute_job(defs, instance, first: date, last: date, selection=None):
    """The refresh job over partitions [first, last] in this process, as the UI runs it."""
    from incomaker_elt.orchestration.schedules import REFRESH_JOB_NAME, partition_range_tags

    job = defs.resolve_job_def(REFRESH_JOB_NAME)
    return job.execute_in_process(
        # Events stay in the run's record; the console only gets warnings (thousands of
        # partition events would otherwise be printed).
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        instance=instance,
        asset_selection=selection,
        tags=partition_range_tags(first.isoformat(), last.isoformat()),
        raise_on_error=False,
    )


def definitions(settings: Settings, attempts: int = 5):
    """build_definitions, read again while another process rewrites dbt's manifest (the
    working tree is shared: a `dbt parse` elsewhere leaves it half-written for a moment)."""
    from incomaker_elt.orchestration.definitions import build_definitions

    for attempt in range(attempts):
        try:
            return build_definitions(settings)
        except ValueError:  # json.JSONDecodeError: the manifest in the middle of a rewrite
            if attempt + 1 == attempts:
                raise
            time.sleep(2.0)
    raise AssertionError("unreachable")


def mart_names() -> set[str]:
    return {p.stem for p in (PROJECT_ROOT / "dbt_project" / "models" / "marts").rglob("*.sql")}


# ----------------------------------------------------------------------- the fresh full load


class References:
    """Fresh full loads, one per (world, today), built once and kept in `root`."""

    def __init__(self, root: Path, world, report: Callable[[str], None] = print) -> None:
        self.root = root
        self.world = world
        self.report = report
        self._built: dict[tuple[date, date, str], tuple[Path, float]] = {}
        self._lock = threading.Lock()

    def get(self, today: date, partitions_start: date, via: str = "run") -> tuple[Path, float]:
        """(warehouse, seconds it took) of a fresh full load up to `today`."""
        key = (today, partitions_start, via)
        with self._lock:
            if key not in self._built:
                self._built[key] = self._build(today, partitions_start, via)
            return self._built[key]

    def _build(self, today: date, partitions_start: date, via: str) -> tuple[Path, float]:
        import dagster as dg

        from incomaker_elt.run import summarise
        from incomaker_elt.standin import StandIn

        started = time.monotonic()
        folder = self.root / f"reference-{partitions_start}-{today}-{via}"
        done = folder / "complete"
        if done.exists():  # built by an earlier session in a kept folder (bench --keep)
            return Path(done.read_text().strip()), float("nan")
        standin = StandIn(self.world, today=today, token=TOKEN)
        with standin.serve(host="127.0.0.1", port=0) as base_url:
            settings = dataclasses.replace(
                lifecycle_settings(folder, base_url), partitions_start=partitions_start
            )
            settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
            if via == "commands":
                step = Step(FIRST_LOAD, today, partitions_start, today, build=True)
                result, _ = load_by_commands(settings, step, f"reference-{today}")
                failure = "" if result == "succeeded" else result
            else:
                defs = definitions(settings)
                with dg.DagsterInstance.ephemeral() as instance:
                    summary = summarise(execute_job(defs, instance, partitions_start, today), 0)
                failure = (
                    ""
                    if summary.success
                    else f"{summary.failed_steps} checks failed: {summary.checks_failed}"
                )
        seconds = time.monotonic() - started
        if failure:
            raise RuntimeError(
                f"the fresh full load at today {today} ({via}) failed, so there is nothing to "
                f"compare with: {failure}"
            )
        done.write_text(str(settings.warehouse_path))
        self.report(f"  fresh full load at today {today} ({via}): {seconds:.1f} s")
        return settings.warehouse_path, seconds


# ------------------------------------------------------------------------------ the script


def _run_job_command(argv: Sequence[str]) -> int:
    """`python tests/lifecycle.py run-job --first D --last D [--build]`: the refresh job over
    those partitions in this process (raw tables only without --build), logging every step
    event, so that the process killing it can tell which stage it is in."""
    import logging

    parser = argparse.ArgumentParser(prog="lifecycle.py run-job")
    parser.add_argument("--first", required=True, type=date.fromisoformat)
    parser.add_argument("--last", required=True, type=date.fromisoformat)
    parser.add_argument("--build", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import dagster as dg

    from incomaker_elt.contract.settings import load_settings
    from incomaker_elt.orchestration.schedules import REFRESH_JOB_NAME, partition_range_tags

    settings = load_settings()
    defs = definitions(settings)
    graph = defs.resolve_asset_graph()
    selection = None
    if not args.build:
        selection = [
            k
            for k in graph.get_all_asset_keys()
            if k.path[0] == "incomaker_raw" and graph.get(k).is_materializable
        ]
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(REFRESH_JOB_NAME).execute_in_process(
            run_config={"loggers": {"console": {"config": {"log_level": "DEBUG"}}}},
            instance=instance,
            asset_selection=selection,
            tags=partition_range_tags(args.first.isoformat(), args.last.isoformat()),
            raise_on_error=False,
        )
    print(json.dumps({"run_id": result.run_id, "success": result.success}), flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run-job":
        sys.exit(_run_job_command(sys.argv[2:]))
    print("usage: python tests/lifecycle.py run-job --first D --last D [--build]", file=sys.stderr)
    sys.exit(2)
