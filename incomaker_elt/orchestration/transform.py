"""Running the dbt project (dbt_project/) on the warehouse: one path for every caller.

`DBT_PROJECT` is the handle Dagster's dbt assets are built from; its preparer (`dbt parse` with
the pipeline's vars) writes target/manifest.json, so that Dagster reads the manifest instead of
parsing the project on every import: `prepare_manifest()` at install/dev time and before a run.

`run_dbt` runs one dbt command through `DbtCliResource`, under the warehouse's lock, retried
while another process holds the file, with its artefacts in a folder of its own. The dbt assets
(transform_assets.py) call it with their step's context; `incomaker-elt transform`
(incomaker_elt/cli.py) calls `build`, which calls it without one and raises `TransformError`
naming every failed model or test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property, partial
from importlib import metadata
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer
from dagster_shared import record
from packaging.version import Version

from incomaker_elt.contract.currency import REFERENCE_CURRENCY
from incomaker_elt.contract.settings import (
    DBT_ENVIRONMENT,
    DBT_EXECUTABLE_VARIABLE,
    PROJECT_ROOT,
    RAW_DATASET,
    Settings,
    dbt_executable_setting,
    load_settings,
)
from incomaker_elt.orchestration.warehouse import exclusive, is_lock_conflict, retry_while_locked

try:
    import fcntl
except ImportError:  # Windows: finished builds' folders are still removed, failed ones stay
    fcntl = None  # type: ignore[assignment]

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DBT_TARGET_DIR = DBT_PROJECT_DIR / "target"
WAREHOUSE_ENV = "INCOMAKER_WAREHOUSE"
DBT_ENVIRONMENT_EXECUTABLE = Path(sys.prefix) / DBT_ENVIRONMENT / "bin" / "dbt"
"""The dbt of the environment `make install` makes for it inside this one (.venv/dbt)."""
BESIDE_EXECUTABLE = Path(sys.executable).with_name("dbt")
"""A dbt installed in this same environment: `.venv/bin/incomaker-elt` does not put .venv/bin on
PATH."""

_FAILED = {"error", "fail", "runtime error"}


class TransformError(RuntimeError):
    """dbt failed; the message names the failed models and tests and what to do next."""

    def __init__(self, message: str, failures: Sequence[NodeFailure] = ()) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


@dataclass(frozen=True)
class NodeFailure:
    name: str
    resource_type: str
    status: str
    message: str
    path: str


@dataclass
class BuildSummary:
    command: list[str]
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    """Results per status (success, pass, warn, skipped ...)."""
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        return f"dbt {self.command[0]}: {parts} in {self.seconds:.1f} s"


def dbt_vars(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The project vars that have a single setting in incomaker_elt.contract, plus `extra`."""
    return {"reference_currency": REFERENCE_CURRENCY, "raw_schema": RAW_DATASET, **(extra or {})}


def dbt_executable() -> Path:
    """The dbt every command runs: INCOMAKER_DBT_EXECUTABLE, else the one in .venv/dbt, else one
    beside this Python, else `dbt` on PATH."""
    configured = dbt_executable_setting()
    if configured is not None:
        return configured
    for candidate in (DBT_ENVIRONMENT_EXECUTABLE, BESIDE_EXECUTABLE):
        if candidate.is_file():
            return candidate
    found = shutil.which("dbt")
    if found is None:
        raise TransformError(
            f"no dbt to run the project with: not in {DBT_ENVIRONMENT_EXECUTABLE.parent.parent}, "
            f"not beside {sys.executable}, not on PATH. Run `make install`, which installs it "
            f"there, or point {DBT_EXECUTABLE_VARIABLE} at a dbt with dbt-duckdb"
        )
    return Path(found).resolve()  # a pipx or Homebrew link: to the environment that holds dbt


def installed_version(executable: Path, package: str) -> str | None:
    """The version of `package` in the Python environment that `executable` (its bin/ folder)
    belongs to, from the package metadata; None if that is no environment holding it. Asking
    dbt itself means starting it (`dbt --version`: 2.5 s of CPU) or importing it here (its
    adapters: a second)."""
    environment = executable.parent.parent
    sites = [*environment.glob("lib/python*/site-packages"), environment / "Lib" / "site-packages"]
    for distribution in metadata.distributions(name=package, path=[str(p) for p in sites]):
        return distribution.version
    return None


def dbt_core_version(executable: Path) -> str:
    """The version of the dbt-core `executable` runs ("unknown" when it is not a Python one)."""
    return installed_version(executable, "dbt-core") or "unknown"


def _check_duckdb(executable: Path) -> None:
    """dbt writes the warehouse with its own DuckDB: of another release line, it could write a
    storage format this process cannot open (DuckDB 2 files are unreadable to 1.x), or fail on
    one it cannot read."""
    theirs = installed_version(executable, "duckdb")
    ours = metadata.version("duckdb")
    if theirs is not None and Version(theirs).release[:2] != Version(ours).release[:2]:
        python = executable.with_name("python")
        raise TransformError(
            f"the dbt at {executable} runs DuckDB {theirs}, the pipeline DuckDB {ours}: both "
            f"write the same warehouse file and must be of one release line. Install the "
            f"pipeline's into dbt's environment (`{python} -m pip install duckdb=={ours}`); the "
            f"warehouse was not touched"
        )


class DbtCli(DbtCliResource):
    """dagster-dbt's dbt resource without two things it does in our process before each command
    for its `fetch_row_counts` and `fetch_column_metadata`, which we do not use
    (`with_table_metadata` reads both over one connection): a dbt adapter over the warehouse
    (macros, partial parse and profile: ~2 s of CPU) and `dbt --version` in a subprocess (~2.5 s
    of CPU, 4 s on a busy machine) to learn the version of the dbt beside this Python, which the
    installed dbt-core says. dagster-dbt runs without an adapter for dbt Fusion already. Without
    the adapter, nothing in this process holds the warehouse open once dbt has exited (it kept
    it open read-only until the process ended), so the checks and publishing can open it."""

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None

    @cached_property
    def _cli_version(self) -> Version:
        found = installed_version(Path(self.dbt_executable), "dbt-core")
        if found is not None:
            return Version(found)
        return DbtCliResource._cli_version.func(self)  # not a Python dbt: ask it


def dbt_resource() -> DbtCliResource:
    executable = dbt_executable()
    _check_duckdb(executable)
    return DbtCli(project_dir=DBT_PROJECT, dbt_executable=str(executable))


class ManifestPreparer(DagsterDbtProjectPreparer):
    """`dbt parse` with the vars every build passes, by the dbt beside this Python; its partial
    parse file is kept for the builds on the same warehouse (`parse_file`: dbt parses the whole
    project again when the profile, which holds the path, or the vars differ: ~20 s of a first
    `make run`). Parsing never opens the warehouse."""

    def prepare(self, project: DbtProject) -> None:
        """Parse unless the manifest is of the project as it is now and this warehouse has a
        partial parse; publish the manifest atomically, only when the project changed.

        dbt writes manifest.json in place, so a process loading the definitions while another
        parses could read half a file (seen with `make ui` beside a run). Each parse writes its
        own folder, and its manifest replaces the published one whole.
        """
        target = Path(project.project_dir) / project.target_path
        settings = load_settings()
        vars_json = json.dumps(dbt_vars())
        parse = parse_file(settings, vars_json)
        fingerprint = _project_fingerprint(Path(project.project_dir), vars_json)
        stamp = target / "manifest.fingerprint"
        manifest = target / "manifest.json"
        current = manifest.exists() and stamp.exists() and stamp.read_text() == fingerprint
        if current and parse.is_file():
            return
        target.mkdir(parents=True, exist_ok=True)
        own = target / f"parse-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            own.mkdir()
            if parse.is_file():  # dbt re-parses only what changed since
                shutil.copy2(parse, own / "partial_parse.msgpack")
            args = ["parse", "--quiet", "--vars", vars_json]
            with _warehouse_env(settings):
                invocation = dbt_resource().cli(args, target_path=own, raise_on_error=False)
            error = invocation.wait().get_error()
            if error is not None:
                raise TransformError(f"dbt parse failed: {error}")
            _keep_parse(own, parse)
            if not current:
                os.replace(own / manifest.name, manifest)
                (own / stamp.name).write_text(fingerprint)
                os.replace(own / stamp.name, stamp)
        finally:
            shutil.rmtree(own, ignore_errors=True)


def _project_fingerprint(project_dir: Path, vars_json: str) -> str:
    """What the manifest depends on: dbt's version, the vars, and every project file's size and
    modification time (target/, logs/ and dbt_packages/ left out)."""
    import hashlib

    version = dbt_core_version(dbt_executable())
    digest = hashlib.sha256(f"{version}\n{vars_json}\n".encode())
    sources = (
        path
        for top in project_dir.iterdir()
        if top.name not in {"target", "logs", "dbt_packages"}
        for path in ([top] if top.is_file() else top.rglob("*"))
    )  # target/ holds every build's compiled SQL: not walked
    for path in sorted(sources):
        if not path.is_file():
            continue
        relative = path.relative_to(project_dir)
        status = path.stat()
        digest.update(f"{relative}:{status.st_size}:{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# DbtProject takes only the parse arguments of its default preparer, which starts the `dbt` on
# PATH; `replace` sets the record's preparer field without going through its constructor.
DBT_PROJECT = record.replace(
    DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR),
    preparer=ManifestPreparer(),
)


def prepare_manifest() -> Path:
    """Write target/manifest.json, which Dagster loads without parsing the project."""
    DBT_PROJECT.preparer.prepare(DBT_PROJECT)
    return DBT_PROJECT.manifest_path


# ------------------------------------------------------------------ each build's artefacts

RUN_TARGETS_DIR = DBT_TARGET_DIR / "runs"
"""Where each dbt command writes its artefacts (compiled SQL, run results, log): ~16 MB a build.
A successful command's folder is removed once its events are out; a failed one stays (its log is
named in the error) until the next command starts."""

_IN_USE = ".in-use"
_YOUNG_SECONDS = 60.0
_LEGACY_SECONDS = 3600.0
_DAGSTER_DEFAULT_TARGET = re.compile(r"^incomaker_dbt-[0-9a-f]{7}-[0-9a-f]{7}$")
"""The per-run folders dagster-dbt makes in target/ when given no target path (before runs/)."""


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_if_unused(path: Path) -> None:
    """Delete a build's folder unless a build holds its `.in-use` lock (it may be another
    warehouse's build in this same project folder)."""
    marker = path / _IN_USE
    if not marker.exists():
        if _age(path) >= _YOUNG_SECONDS:  # younger: just made, its builder is about to lock it
            shutil.rmtree(path, ignore_errors=True)
        return
    if fcntl is None:
        return
    try:
        handle = open(marker, "a+")  # noqa: SIM115 - held while the folder is removed
    except FileNotFoundError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        shutil.rmtree(path, ignore_errors=True)


def remove_old_run_targets() -> None:
    """Delete earlier builds' artefact folders that no build is using.

    The manifest and partial-parse files in target/ itself stay: Dagster and dbt read them.
    """
    for path in sorted(RUN_TARGETS_DIR.glob("*")):
        if path.is_dir():
            _remove_if_unused(path)
    for path in DBT_TARGET_DIR.glob("incomaker_dbt-*"):
        if _DAGSTER_DEFAULT_TARGET.match(path.name) and _age(path) > _LEGACY_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


PARSES_DIR = DBT_TARGET_DIR / "parses"
"""dbt's partial parse file per warehouse path and vars, as the last command with them left it:
the profile holds the path, and dbt parses the whole project again (5-13 s) when the profile or
the vars differ from its file's."""
PARSES_KEPT = 16


def parse_file(settings: Settings, vars_json: str) -> Path:
    """Where the commands on this warehouse with these vars keep their partial parse."""
    import hashlib

    key = f"{settings.warehouse_path.resolve()}\n{vars_json}"
    return PARSES_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.msgpack"


def _keep_parse(target: Path, parse: Path) -> None:
    """Keep the partial parse a command wrote (dbt writes it before running anything, so a failed
    command's is good too) for the next command on the same warehouse, and the newest few only."""
    written = target / "partial_parse.msgpack"
    if not written.is_file():
        return
    parse.parent.mkdir(parents=True, exist_ok=True)
    os.replace(written, parse)
    kept = sorted(PARSES_DIR.glob("*.msgpack"), key=_age)
    for old in kept[PARSES_KEPT:]:
        old.unlink(missing_ok=True)


@contextmanager
def run_target(run_id: str, parse: Path | None = None) -> Iterator[Path]:
    """A new folder for one dbt command's artefacts, marked in use while the command runs.

    It starts with the partial parse of the last command (or `prepare_manifest`) on the same
    warehouse with the same vars, `parse`, so dbt need not parse the whole project again: a few
    seconds less per command.
    """
    path = RUN_TARGETS_DIR / f"{run_id[:8]}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    if parse is not None:
        with suppress(FileNotFoundError):  # none yet, or evicted meanwhile by another command
            shutil.copy2(parse, path / "partial_parse.msgpack")
    with open(path / _IN_USE, "w") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield path


_DBT_STOP_SECONDS = 30.0


def stop_dbt(process: subprocess.Popen) -> None:
    """End a dbt whose events are no longer read: left running it keeps the warehouse open
    (and soon blocks on its full output pipe), so no later step could open the file."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_DBT_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ------------------------------------------------------------------------- one dbt command

Invoke = Callable[[list[str], Path], DbtCliInvocation]
"""Starts dbt with these arguments, its artefacts in this folder."""


@dataclass
class DbtRun:
    """What one dbt command did: the Dagster events read from it, dbt's result per node
    (run_results.json, with the node from manifest.json) and the error it ended with."""

    events: list[Any]
    results: list[dict[str, Any]]
    error: Exception | None


@contextmanager
def _warehouse_env(settings: Settings) -> Iterator[None]:
    """The profile reads the warehouse path from INCOMAKER_WAREHOUSE: the settings' absolute
    path while dbt is started (its process copies the environment), then as it was."""
    previous = os.environ.get(WAREHOUSE_ENV)
    os.environ[WAREHOUSE_ENV] = str(settings.warehouse_path.resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(WAREHOUSE_ENV, None)
        else:
            os.environ[WAREHOUSE_ENV] = previous


def _results(target: Path) -> list[dict[str, Any]]:
    """dbt's result per node, each with its manifest node under "node" (empty if none ran)."""
    try:
        results = json.loads((target / "run_results.json").read_text())["results"]
        manifest = json.loads((target / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []
    nodes = {**manifest.get("nodes", {}), **manifest.get("sources", {})}
    return [{**result, "node": nodes.get(result["unique_id"], {})} for result in results]


def _wait(invocation: DbtCliInvocation) -> Iterable[Any]:
    invocation.wait()
    return ()


def run_dbt(
    settings: Settings,
    args: Sequence[str],
    *,
    extra_vars: Mapping[str, Any] | None = None,
    invoke: Invoke | None = None,
    read: Callable[[DbtCliInvocation], Iterable[Any]] = _wait,
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
    then: Callable[[list[Any]], list[Any]] | None = None,
) -> DbtRun:
    """One dbt command (`args`, with the pipeline's vars and `extra_vars`) on the warehouse of
    `settings`.

    Holds the warehouse's lock file like every step of a Dagster run, and starts again while
    another process has the file open (within INCOMAKER_WAREHOUSE_LOCK_TIMEOUT). `invoke` starts
    dbt (default: `dbt_resource()`, no Dagster context); `read` takes its events (default: none,
    waits for the end). `then` is applied to the events read (a failed command's too) while the
    lock is still held. A failure comes back in `error`, with the events read before it.
    """
    vars_json = json.dumps(dbt_vars(extra_vars))
    args = [*args, "--vars", vars_json]
    parse = parse_file(settings, vars_json)
    invoke = invoke or (lambda a, target: dbt_resource().cli(a, target_path=target))
    run_id = run_id or uuid.uuid4().hex

    def attempt() -> DbtRun:
        events: list[Any] = []
        error: Exception | None = None
        with run_target(run_id, parse) as target:
            with _warehouse_env(settings):
                invocation = invoke(args, target)
            try:
                # With DuckDB, dagster-dbt yields the events once dbt has exited anyway (the
                # row counts need the file), so collecting them first costs nothing.
                events.extend(read(invocation))
            except Exception as exc:
                if not events and is_lock_conflict(exc):  # dbt never opened the file
                    shutil.rmtree(target, ignore_errors=True)
                    raise  # retried while it is the lock
                error = exc
            finally:
                stop_dbt(invocation.process)  # before any retry and before the row counts
            results = _results(target)
            _keep_parse(target, parse)
            if error is None:
                shutil.rmtree(target, ignore_errors=True)
        return DbtRun(then(events) if then else events, results, error)

    with exclusive(settings.warehouse_path, log, timeout=settings.warehouse_lock_timeout):
        remove_old_run_targets()
        return retry_while_locked(
            attempt, settings.warehouse_path, timeout=settings.warehouse_lock_timeout, log=log
        )


# ------------------------------------------------------------------ `incomaker-elt transform`


def _status(result: Mapping[str, Any]) -> str:
    return str(result.get("status", "")).lower()


def _failures(results: Sequence[Mapping[str, Any]]) -> list[NodeFailure]:
    return [
        NodeFailure(
            name=r["node"].get("name") or r["unique_id"],
            resource_type=r["node"].get("resource_type") or r["unique_id"].split(".")[0],
            status=_status(r),
            message=(r.get("message") or "").strip(),
            path=r["node"].get("original_file_path", ""),
        )
        for r in results
        if _status(r) in _FAILED
    ]


def _error_message(command: str, failures: Sequence[NodeFailure], error: Any) -> str:
    if not failures:
        return (
            f"dbt {command} failed before running any model: {error}. Check the project "
            f"({DBT_PROJECT_DIR}) and that the warehouse file is not locked by another process."
        )
    lines = [f"dbt {command} failed: {len(failures)} model(s)/test(s) did not pass:"]
    for f in failures:
        first = f.message.splitlines()[0] if f.message else f.status
        lines.append(f"  - {f.resource_type} {f.name} ({f.path}): {first}")
    lines.append(
        "Re-run one with `incomaker-elt transform --select <name>` to see it fail alone; its "
        "compiled SQL is under the dbt_project/target/runs/ folder named in the error."
    )
    return "\n".join(lines)


def build(
    settings: Settings | None = None,
    *,
    select: Sequence[str] | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    command: str = "build",
    extra_args: Sequence[str] = (),
) -> BuildSummary:
    """`dbt build` (or `command`) on the warehouse of `settings`; raise TransformError naming
    what failed."""
    settings = settings or load_settings()
    # one argument: dagster-dbt takes a single value after --select, dbt splits it on spaces
    args = [command, *(["--select", " ".join(select)] if select else []), *extra_args]
    started = time.perf_counter()
    note = partial(print, file=sys.stderr, flush=True)
    run = run_dbt(settings, args, extra_vars=extra_vars, log=note)
    failures = _failures(run.results)
    if run.error is not None or failures:
        raise TransformError(_error_message(command, failures, run.error), failures)
    summary = BuildSummary(command=args, seconds=time.perf_counter() - started)
    for result in run.results:
        status = _status(result)
        summary.counts[status] = summary.counts.get(status, 0) + 1
        if status == "warn":
            summary.warnings.append(f"{result['node'].get('name')}: {result.get('message')}")
    return summary
