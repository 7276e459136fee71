"""The main job: `incomaker-elt run` (and `make run`) runs the whole pipeline through Dagster.

Without an API token (INCOMAKER_API_TOKEN, or api_token under [sources.incomaker] in dlt's
`.dlt/secrets.toml`) it starts the stand-in API in a child process on a free loopback port and
loads every day up to the stand-in's today; with a token and an address (INCOMAKER_BASE_URL, or
base_url in `.dlt/config.toml`) it runs against that API up to yesterday. Either way this process
executes the Dagster job that the nightly schedule runs, records it in the Dagster instance of
DAGSTER_HOME (so `make ui` shows it afterwards; incomaker_elt.orchestration.run_history stores its
~15,000 events of a first load in batches, not one commit each, which would add minutes), and
prints a summary. A failed run exits non-zero and says why. The console shows one progress line
per stage (incomaker_elt.console); the full log goes to DAGSTER_HOME/run-logs.

`incomaker-elt ui` (make ui) starts the Dagster UI with the same environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from incomaker_elt.console import LOGGER_NAME, RunConsole, log_file_path, remove_old_log_files
from incomaker_elt.contract.command_line import iso_date
from incomaker_elt.contract.settings import (
    API_TOKEN_VARIABLE,
    NO_API_ADDRESS,
    PROJECT_ROOT,
    RAW_DATASET,
    Settings,
    load_settings,
    requests_per_second,
)

if TYPE_CHECKING:
    import dagster as dg

_STANDIN_READY_SECONDS = 300.0
_URL = re.compile(r"https?://[^\s]+")
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
"""Colours and control characters (dbt's messages carry them): kept out of the summary."""


class RunError(RuntimeError):
    """The run could not start or did not finish; the message says what to do."""


@dataclass
class StandInProcess:
    process: subprocess.Popen[str]
    base_url: str
    token: str
    today: date

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # --exit-with-parent: the stand-in stops on its own
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def standin_process(scale: str, seed: int, today: date | None) -> Iterator[StandInProcess]:
    """`incomaker-elt simulate` on a free loopback port with a one-off token, stopped on exit.

    The stand-in ends with this process however this one ends, `kill -9` included
    (`--exit-with-parent`: it watches a pipe from us, and on Linux the kernel signals it), so no
    stand-in outlives its run. Port 0 lets the OS pick a free port, so a next run never finds
    its port taken. Call it from the main thread: on Linux the kernel's signal follows the thread
    that started the child.
    """
    if today is None:
        from incomaker_elt.standin import DEFAULT_TODAY

        today = DEFAULT_TODAY
    token = secrets.token_urlsafe(24)
    command = [
        sys.executable,
        "-m",
        "incomaker_elt.cli",
        "simulate",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--scale",
        scale,
        "--seed",
        str(seed),
        "--today",
        today.isoformat(),
        "--exit-with-parent",
    ]
    process = subprocess.Popen(
        command,
        # The one-off token goes by environment, not argv, where `ps` would show it.
        env={
            **os.environ,
            "INCOMAKER_STANDIN_TOKEN": token,
            "INCOMAKER_STANDIN_PARENT_PID": str(os.getpid()),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        cwd=PROJECT_ROOT,
    )
    standin = StandInProcess(process, "", token, today)
    last_lines: deque[str] = deque(maxlen=10)
    ready = threading.Event()

    def read() -> None:
        # Keeps draining the child's output for the whole run, so it never blocks on a full pipe.
        assert process.stdout is not None
        for line in process.stdout:
            last_lines.append(line.rstrip())
            match = _URL.search(line)
            if match and not ready.is_set():
                standin.base_url = match.group(0).rstrip("/.")
                ready.set()
        ready.set()

    threading.Thread(target=read, name="standin-output", daemon=True).start()
    try:
        if not ready.wait(_STANDIN_READY_SECONDS) or not standin.base_url:
            tail = "\n".join(last_lines)
            raise RunError(f"the stand-in API did not start:\n{tail}")
        yield standin
    finally:
        standin.stop()


@dataclass
class RunSummary:
    run_id: str
    success: bool
    rows: dict[str, int] = field(default_factory=dict)
    """Rows per materialised asset (`schema/table`), as recorded on the materialisation."""
    checks_passed: list[str] = field(default_factory=list)
    checks_warned: list[str] = field(default_factory=list)
    checks_failed: list[str] = field(default_factory=list)
    failed_steps: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    days: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (ingestion, dbt, checks, publishing), from the run's step events."""
    log_path: Path | None = None
    """The run's full log (everything Dagster, dlt and dbt logged)."""
    warnings: int = 0
    """Different warning texts the run logged (each shown once on the console)."""


def summarise(result: object, seconds: float) -> RunSummary:
    """Tables, rows, checks and failures from the events of an executed run."""
    import dagster as dg

    from incomaker_elt.orchestration.alerts import step_failure_cause

    assert isinstance(result, dg.ExecuteInProcessResult)
    summary = RunSummary(run_id=result.run_id, success=result.success, seconds=seconds)
    for event in result.all_events:
        if event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            row_count = materialization.metadata.get("dagster/row_count")
            if row_count is not None:
                summary.rows[materialization.asset_key.to_user_string()] = int(row_count.value)
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            if evaluation.passed:
                summary.checks_passed.append(name)
            elif evaluation.severity == dg.AssetCheckSeverity.WARN:
                summary.checks_warned.append(name)
            else:
                summary.checks_failed.append(name)
        elif event.is_step_failure and event.step_key:
            summary.failed_steps[event.step_key] = step_failure_cause(event.step_failure_data)
    return summary


def print_summary(summary: RunSummary, settings: Settings, api: str) -> None:
    by_layer: dict[str, dict[str, int]] = {}
    for key, rows in summary.rows.items():
        layer, _, table = key.partition("/")
        by_layer.setdefault(layer, {})[table] = rows
    print()
    print(f"incomaker-elt run {summary.run_id[:8]}: {api}, days {summary.days}")
    for layer in ("incomaker_raw", "staging", "intermediate", "marts"):
        tables = by_layer.get(layer, {})
        if tables:
            print(f"  {layer:<14} {len(tables):>3} tables {sum(tables.values()):>12,} rows")
    marts = by_layer.get("marts", {})
    if marts:
        print("  marts:")
        for table, rows in sorted(marts.items()):
            print(f"    {table:<34} {rows:>10,} rows")
    checks = len(summary.checks_passed) + len(summary.checks_warned) + len(summary.checks_failed)
    print(
        f"  checks: {len(summary.checks_passed)} of {checks} passed"
        + (f", {len(summary.checks_warned)} warned" if summary.checks_warned else "")
        + (f", {len(summary.checks_failed)} failed" if summary.checks_failed else "")
    )
    for name in summary.checks_warned:
        print(f"    warned: {name}")
    for name in summary.checks_failed:
        print(f"    FAILED: {name}")
    for step, message in summary.failed_steps.items():
        print(f"    step {step} failed: {_CONTROL.sub('', message)}")
    if summary.success:
        print(f"  serving warehouse (read-only, for BI tools): {settings.serving_warehouse_path}")
    elif settings.serving_warehouse_path.exists():
        print(f"  NOT published: the previous copy {settings.serving_warehouse_path} is unchanged")
    else:
        print("  NOT published: no serving warehouse was published")
    print(f"  warehouse: {settings.warehouse_path}")
    print("  lineage, checks and the nightly schedule: `make ui` (http://127.0.0.1:3000)")
    if summary.warnings:
        print(f"  warnings: {summary.warnings} (each shown once above; all in the log)")
    if summary.log_path is not None:
        print(f"  log: {summary.log_path}")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary.stage_seconds.items())
    print(f"  took {summary.seconds:.0f} s" + (f" ({stages})" if stages else ""))


def partition_days(settings: Settings, last_day: date) -> tuple[str, str]:
    """First and last daily partition of a full run, clipped to the days Dagster knows."""
    from incomaker_elt.orchestration.partitions import daily_partitions

    partitions = daily_partitions(settings)
    newest = partitions.get_last_partition_key()
    if newest is None:
        raise RunError(
            f"INCOMAKER_PARTITIONS_START={settings.partitions_start} leaves no complete day to load"
        )
    last = min(last_day, date.fromisoformat(newest))
    if last < settings.partitions_start:
        raise RunError(
            f"the last day to load ({last}) is before INCOMAKER_PARTITIONS_START "
            f"({settings.partitions_start}); set an earlier start"
        )
    return settings.partitions_start.isoformat(), last.isoformat()


def ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME for this process and its children: the project's folder unless set."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def step_stages(defs: dg.Definitions, job: dg.JobDefinition) -> dict[str, str]:
    """The console's stage of each step of `job`: the raw tables' steps are ingestion, the
    serving warehouse's is publishing, asset checks' are checks, other assets' (dbt) dbt."""
    import dagster as dg

    from incomaker_elt.orchestration.publishing import SERVING_ASSET_KEY

    stages: dict[str, str] = {}
    for item in defs.assets or []:
        if isinstance(item, dg.AssetsDefinition) and item.is_executable:
            if any(key.path[0] == RAW_DATASET for key in item.keys):
                stages[item.node_def.name] = "ingestion"
            elif SERVING_ASSET_KEY in item.keys:
                stages[item.node_def.name] = "publishing"
            else:
                stages[item.node_def.name] = "dbt"
    for checks in defs.asset_checks or []:
        stages[checks.node_def.name] = "checks"
    in_job = {node.name for node in job.nodes}
    return {step: stage for step, stage in stages.items() if step in in_job}


def run_pipeline(
    settings: Settings,
    last_day: date,
    console: RunConsole,
    selection: Sequence[dg.AssetKey] | None = None,
) -> RunSummary:
    """Prepare dbt's manifest, then execute the refresh job over [partitions start, last_day].

    `selection`: only these assets (and their checks), for a short run; None: the whole job.
    """
    import dagster as dg

    from incomaker_elt.orchestration.transform import TransformError, prepare_manifest

    try:
        prepare_manifest()
    except TransformError as exc:
        raise RunError(str(exc)) from exc
    from incomaker_elt.orchestration.definitions import build_definitions
    from incomaker_elt.orchestration.run_history import (
        fail_abandoned_runs,
        process_tags,
        recording_instance,
    )
    from incomaker_elt.orchestration.schedules import REFRESH_JOB_NAME, partition_range_tags

    first, last = partition_days(settings, last_day)
    defs = build_definitions(settings)
    job = defs.resolve_job_def(REFRESH_JOB_NAME)
    # The console's stage of each step, and how many operations and checks the run has.
    stages = step_stages(defs, job)
    if selection is None:
        in_job = [
            item
            for item in [*(defs.assets or []), *(defs.asset_checks or [])]
            if isinstance(item, dg.AssetsDefinition) and item.node_def.name in stages
        ]
        operations = sum(key.path[0] == RAW_DATASET for item in in_job for key in item.keys)
        checks = sum(len(item.check_keys) for item in in_job)
    else:  # a part of the job: the checks it evaluates are not known here
        operations = sum(key.path[0] == RAW_DATASET for key in selection)
        checks = 0
    console.expect(stages, operations=operations or None, checks=checks or None)
    # The console's logger instead of Dagster's: progress and warnings once on the console,
    # everything in the log file; every event stays in the run's record.
    job = dg.Definitions.merge(
        defs, dg.Definitions(loggers={LOGGER_NAME: console.dagster_logger()})
    ).resolve_job_def(REFRESH_JOB_NAME)
    started = time.monotonic()
    # Recorded in DAGSTER_HOME, so `make ui` shows this run, its logs, partitions and checks.
    with recording_instance(settings.dagster_home) as instance:
        for run_id in fail_abandoned_runs(instance):
            console.warning(f"run {run_id[:8]} was left unfinished by a killed process: failed")
        result = job.execute_in_process(
            run_config={"loggers": {LOGGER_NAME: {}}},
            instance=instance,
            tags={**partition_range_tags(first, last), **process_tags("incomaker-elt run")},
            raise_on_error=False,
            asset_selection=selection,
        )
    console.finish()
    summary = summarise(result, time.monotonic() - started)
    summary.days = f"{first}..{last}"
    summary.stage_seconds = console.stage_seconds()
    summary.log_path = console.log_path
    summary.warnings = len(console.warnings)
    return summary


def against_standin(settings: Settings, standin: StandInProcess) -> Settings:
    """The settings of a run against `standin`: its address, its one-off token, its today.

    Handed to the definitions as values, the address as the API resource's. The token alone is
    also put in this process's INCOMAKER_API_TOKEN: the resource then names that variable
    (`EnvVar`) instead of holding the token, which Dagster would keep in the run's record and
    show in the UI.
    """
    os.environ[API_TOKEN_VARIABLE] = standin.token
    return dataclasses.replace(
        settings,
        base_url=standin.base_url,
        api_token=standin.token,
        source_today=standin.today,
        requests_per_second=requests_per_second(standin.base_url, standin.token),
    )


def run_logs_folder(settings: Settings) -> Path:
    """Where each `incomaker-elt run` writes its full log: DAGSTER_HOME/run-logs.

    Not DAGSTER_HOME/logs: that is Dagster's telemetry folder, whose files the webserver and the
    daemon move away and post to Dagster's telemetry server, whatever dagster.yaml says."""
    return settings.dagster_home / "run-logs"


def run_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    ensure_dagster_home(settings)
    folder = run_logs_folder(settings)
    remove_old_log_files(folder)  # the console creates the folder
    log_path = log_file_path(folder, secrets.token_hex(4))
    console = RunConsole(log_path, verbose=args.verbose)
    try:
        with console.capturing():
            selection = None  # the whole job
            if args.select:  # incomaker_raw/orders marts/rfm_contacts, commas allowed
                import dagster as dg

                keys = [key for value in args.select for key in value.split(",")]
                selection = [dg.AssetKey.from_user_string(key) for key in keys]
            if settings.api_token:  # INCOMAKER_API_TOKEN, else dlt's .dlt/secrets.toml
                if not settings.base_url:
                    raise RunError(f"an API token is set but {NO_API_ADDRESS}")
                last_day = datetime.now(UTC).date() - timedelta(days=1)
                summary = run_pipeline(settings, last_day, console, selection)
                api = f"the Incomaker API at {settings.base_url}"
            else:
                console.note(
                    "no API token (INCOMAKER_API_TOKEN, or api_token in .dlt/secrets.toml): "
                    f"starting the stand-in API ({args.scale} world)"
                )
                with standin_process(args.scale, args.seed, args.today) as standin:
                    settings = against_standin(settings, standin)
                    console.note(f"stand-in ready at {standin.base_url}, today {standin.today}")
                    summary = run_pipeline(settings, standin.today, console, selection)
                    api = f"stand-in API (today {standin.today})"
    except RunError as exc:
        print(f"incomaker-elt run: {exc}", file=sys.stderr)
        print(f"incomaker-elt run: the full log is {log_path}", file=sys.stderr)
        return 1
    print_summary(summary, settings, api)
    if not summary.success:
        print(
            f"incomaker-elt run: the run failed; the full log is {log_path}, and `make ui` "
            "shows the run's steps and their logs",
            file=sys.stderr,
        )
        return 1
    return 0


def _dagster_dev(command: list[str], env: dict[str, str]) -> int:
    """Run `dagster dev` until it exits; on Ctrl-C let it stop its webserver and daemon first.

    Ctrl-C reaches `dagster dev` too (same process group); killing it at once, as
    subprocess.call would, leaves its webserver and daemon running without it.
    """
    process = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT)
    try:
        return process.wait()
    except KeyboardInterrupt:
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.terminate()
            return process.wait()


def ui_command(args: argparse.Namespace) -> int:
    """`dagster dev` on 127.0.0.1 with DAGSTER_HOME set, and the stand-in when there is no token."""
    from incomaker_elt.contract.catalogue import load_catalogue

    settings = load_settings()
    # A broken override file would otherwise surface only as a code location error in the UI.
    load_catalogue(settings.catalogue_overrides)
    env = dict(os.environ, DAGSTER_HOME=str(ensure_dagster_home(settings)))
    # `dagster dev` runs in the project folder; its steps read dlt's .dlt/ (the API address and
    # token may be there) of the folder this command was started in, as `incomaker-elt run` does.
    env.setdefault("DLT_PROJECT_DIR", os.getcwd())
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # dbt for prepare_if_dev
    command = [
        str(Path(bin_dir) / "dagster"),
        "dev",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workspace",
        str(PROJECT_ROOT / "workspace.yaml"),
    ]
    try:
        if settings.api_token:
            return _dagster_dev(command, env)
        with standin_process(args.scale, args.seed, args.today) as standin:
            env["INCOMAKER_BASE_URL"] = standin.base_url
            env[API_TOKEN_VARIABLE] = standin.token
            env["INCOMAKER_SOURCE_TODAY"] = standin.today.isoformat()
            print(f"stand-in API at {standin.base_url} (today {standin.today}); Dagster UI next")
            return _dagster_dev(command, env)
    except RunError as exc:
        print(f"incomaker-elt ui: {exc}", file=sys.stderr)
        return 1


def _standin_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stand-in API (used when INCOMAKER_API_TOKEN is not set)")
    group.add_argument("--scale", default="small", help="size of the synthetic account")
    group.add_argument("--seed", type=int, default=1, help="seed of the synthetic account")
    group.add_argument("--today", type=iso_date, help="the stand-in's today (default 2026-06-30)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the whole pipeline through Dagster and print a summary",
        description=(
            "Load every API operation, build the dbt models, run the checks and publish the "
            "serving warehouse, as the nightly Dagster job does. Without an API token "
            "(INCOMAKER_API_TOKEN or .dlt/secrets.toml) the stand-in API is started and used."
        ),
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print the whole stream of Dagster, dlt and dbt logs instead of progress lines",
    )
    p.add_argument(
        "--select",
        nargs="+",
        metavar="ASSET",
        help=(
            "run only these assets and their checks, named as the UI names them "
            "(incomaker_raw/orders marts/rfm_contacts); default: the whole job"
        ),
    )
    _standin_options(p)
    p.set_defaults(handler=run_command)

    p = subparsers.add_parser(
        "ui",
        help="start the Dagster UI (dagster dev) for this project",
        description="The Dagster UI with DAGSTER_HOME=.dagster_home; the stand-in without a token.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    _standin_options(p)
    p.set_defaults(handler=ui_command)
