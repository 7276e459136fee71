"""The console of `incomaker-elt run`: one progress line per stage, each warning once, a log file.

A whole run logs thousands of lines (Dagster's events, dlt, dbt's node results). On the console
the run shows instead one line per stage: ingestion (operations done, pages and rows so far), the
dbt build (models and tests), the checks and publishing; each warning text once; then the run's
summary. Everything, at DEBUG, goes to one log file per run, whose path the summary prints.

Where the progress comes from:
- Dagster hands every event and log message of the run to its loggers: `dagster_logger()` is one,
  passed to the job (step starts and ends, check evaluations, warnings logged by steps).
- Ingestion logs each page and each finished operation on the `ingestion.progress` logger
  (incomaker_elt/ingestion/fetch.py).
- dagster-dbt writes dbt's node results ("12 of 309 OK created sql view model ...") to
  sys.stdout, which is taken over for the run and read line by line.

On a terminal the stages are a live display (rich); otherwise (CI, a pipe, `make run > log`)
plain lines: when a stage starts, at most every PLAIN_EVERY_S seconds while it runs, when it ends.
With `verbose` the console gets the whole stream instead, as Dagster, dlt and dbt print it.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import dagster as dg
    from rich.progress import Progress, TaskID

STAGES = ("ingestion", "dbt", "checks", "publishing")
"""The stages of a run, in the order they run; a step of the job belongs to one of them."""

LOGGER_NAME = "incomaker_console"
"""The Dagster logger of a run shown by this console: the key under run_config["loggers"]."""

PLAIN_EVERY_S = 20.0
"""Without a terminal, a running stage prints a progress line at most this often."""

KEPT_LOG_FILES = 30
"""Log files of earlier runs kept beside a new one; older ones are removed."""

_WARNING_WIDTH = 160
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DBT_NODE = re.compile(r"^(\d+) of (\d+) (START|OK|PASS|WARN|FAIL|ERROR|SKIP|NO-OP)\b\s*(.*)$")
_DBT_FOUND = re.compile(r"^Found (\d+) models?\b")
_DBT_TESTS = re.compile(r"\b(\d+) (?:data |unit )?tests?\b")
_OWN_LOGGERS = ("dbt.stdout", "incomaker_elt.printed")
"""Loggers this console writes to itself (for the file): never echoed back to the console."""
_NOISY_LIBRARIES = ("httpx", "httpcore", "urllib3", "asyncio", "filelock", "fsspec", "alembic")
"""Below WARNING these log every request or lock (thousands of lines) and say nothing of the run."""


def log_file_path(folder: Path, run_id: str) -> Path:
    """`<folder>/run-<UTC time>-<run id prefix>.log`: one file per run, sorted by time."""
    moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return folder / f"run-{moment}-{run_id[:8]}.log"


def remove_old_log_files(folder: Path, keep: int = KEPT_LOG_FILES) -> None:
    for old in sorted(folder.glob("run-*.log"))[:-keep]:
        old.unlink(missing_ok=True)


@dataclass
class Stage:
    """What the console knows of one stage; `describe()` is its progress line."""

    name: str
    steps_left: int = 0
    """The job's steps in this stage that have not ended or been skipped: at 0 the stage ends."""
    started_at: float | None = None
    ended_at: float | None = None
    failed: bool = False
    total: int | None = None
    # ingestion
    operations: dict[str, tuple[int, int]] = field(default_factory=dict)
    operations_done: set[str] = field(default_factory=set)
    # dbt
    models_done: int = 0
    tests_total: int | None = None
    tests_done: int = 0
    # checks
    passed: int = 0
    warned: int = 0
    # dbt and checks
    failures: int = 0
    # publishing
    published: str = ""

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.monotonic()) - self.started_at

    @property
    def done(self) -> int:
        if self.name == "ingestion":
            return len(self.operations_done)
        if self.name == "dbt":
            return self.models_done
        if self.name == "checks":
            return self.passed + self.warned + self.failures
        return 1 if self.ended_at is not None and not self.failed else 0

    def describe(self) -> str:
        def of(done: int, total: int | None) -> str:
            return f"{done:,}/{total:,}" if total else f"{done:,}"

        if self.name == "ingestion":
            pages = sum(pages for pages, _ in self.operations.values())
            rows = sum(rows for _, rows in self.operations.values())
            return f"{of(self.done, self.total)} operations, {pages:,} pages, {rows:,} rows"
        if self.name == "dbt":
            if self.total is None and not self.models_done + self.tests_done:
                return ""  # dbt is starting
            models = of(self.models_done, self.total)
            text = f"{models} models, {of(self.tests_done, self.tests_total)} tests"
            return text + (f", {self.failures} failed" if self.failures else "")
        if self.name == "checks":
            text = f"{of(self.done, self.total)} checks: {self.passed:,} passed"
            text += f", {self.warned} warned" if self.warned else ""
            return text + (f", {self.failures} failed" if self.failures else "")
        return self.published or ("publishing the serving warehouse" if self.steps_left > 0 else "")


class RunConsole:
    """Receives a run's events, log records and printed lines; shows progress and warnings."""

    def __init__(
        self,
        log_path: Path,
        *,
        verbose: bool = False,
        out: TextIO | None = None,
        live: bool | None = None,
        plain_every_s: float = PLAIN_EVERY_S,
    ) -> None:
        self.log_path = log_path
        self.verbose = verbose
        self.out = out or sys.stdout
        if live is None:
            live = self.out.isatty() and os.environ.get("TERM") != "dumb"
        self.live = live and not verbose
        self.plain_every_s = plain_every_s
        self.stages = {name: Stage(name) for name in STAGES}
        self.step_stage: dict[str, str] = {}
        self.warnings: dict[str, int] = {}
        """Each warning text shown, and how often it came."""
        self._lock = threading.RLock()
        self._last_plain: dict[str, float] = {}
        self._last_detail: dict[str, str] = {}
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._file_handler: logging.Handler | None = None
        self._dbt_log = logging.getLogger("dbt.stdout")
        self._printed_log = logging.getLogger("incomaker_elt.printed")

    def expect(
        self,
        step_stages: Mapping[str, str],
        *,
        operations: int | None = None,
        checks: int | None = None,
    ) -> None:
        """The job's steps by stage, the operations to load and the checks to evaluate."""
        with self._lock:
            self.step_stage = dict(step_stages)
            for stage in step_stages.values():
                self.stages[stage].steps_left += 1
            self.stages["ingestion"].total = operations
            self.stages["checks"].total = checks

    @contextmanager
    def capturing(self) -> Iterator[RunConsole]:
        """For the run: the log file, logging routed here, sys.stdout/stderr read line by line."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(self.log_path, encoding="utf-8")
        file_handler.setFormatter(_FileFormatter())
        file_handler.addFilter(_not_page_progress)
        self._file_handler = file_handler
        root = logging.getLogger()
        saved_levels = {name: logging.getLogger(name).level for name in ("", *_NOISY_LIBRARIES)}
        saved_handlers = root.handlers[:]
        root.handlers = [file_handler, _Records(self.on_python_record)]
        root.setLevel(logging.DEBUG)
        for name in _NOISY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        # dlt's logger does not propagate and prints to stderr: for the run its one handler
        # hands records to ours (dlt takes the first handler it finds as its own).
        dlt_logger = logging.getLogger("dlt")
        saved_dlt_handlers = dlt_logger.handlers[:]
        dlt_logger.handlers = [_ToRoot()]
        logging.captureWarnings(True)
        saved_stdout, saved_stderr = sys.stdout, sys.stderr
        sys.stdout = _Lines(partial(self._printed_line, self._dbt_log))
        sys.stderr = _Lines(partial(self._printed_line, self._printed_log))
        try:
            self._start_display()
            yield self
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            self._stop_display()
            sys.stdout, sys.stderr = saved_stdout, saved_stderr
            logging.captureWarnings(False)
            dlt_logger.handlers = saved_dlt_handlers
            root.handlers = saved_handlers
            for name, level in saved_levels.items():
                logging.getLogger(name).setLevel(level)
            file_handler.close()
            self._file_handler = None

    def _start_display(self) -> None:
        if not self.live:
            return
        from rich import progress
        from rich.console import Console
        from rich.text import Text

        stages = self.stages

        class StageTime(progress.ProgressColumn):
            """The stage's own clock: from its first step to its last (as in the summary); rich's
            elapsed column stops when the bar is full, and dbt's models fill it before its tests
            have run."""

            def render(self, task: Any) -> Text:
                seconds = stages[task.description].seconds or 0.0
                return Text(f"{seconds:5.0f} s", style="progress.elapsed")

        self._progress = progress.Progress(
            progress.SpinnerColumn(finished_text=" "),
            progress.TextColumn("{task.description:<11}"),
            progress.BarColumn(bar_width=20),
            StageTime(),
            progress.TextColumn("{task.fields[detail]}"),
            console=Console(file=self.out, force_terminal=True),
            refresh_per_second=4,
            # sys.stdout and sys.stderr are ours for the run: rich must not swap them again.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._progress.start()

    def _stop_display(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def dagster_logger(self) -> dg.LoggerDefinition:
        """A Dagster logger that hands every event and message of the run to this console."""
        import dagster as dg

        handler = _Records(self.on_dagster_record)

        @dg.logger(description="incomaker-elt run: progress, warnings once, and the log file")
        def incomaker_console(_context: dg.InitLoggerContext) -> logging.Logger:
            run_logger = logging.Logger(LOGGER_NAME, level=logging.DEBUG)  # not under root
            run_logger.addHandler(handler)
            return run_logger

        return incomaker_console

    def note(self, text: str) -> None:
        """A line of the run command itself (the stand-in starting...): console and log file."""
        self._print(text)
        self._printed_log.info(text)

    def warning(self, text: str, *, streamed: bool = False, label: str = "warning") -> None:
        """Show a warning (or an error) the first time its text comes; count the repeats.

        `streamed`: it came from the run's logs, which `verbose` prints already."""
        key = " ".join(text.split())
        if not key:
            return
        with self._lock:
            seen = key in self.warnings
            self.warnings[key] = self.warnings.get(key, 0) + 1
        if not seen and not (streamed and self.verbose):
            first = text.strip().splitlines()[0]
            if len(first) > _WARNING_WIDTH:
                first = first[: _WARNING_WIDTH - 1] + "…"
            self._print(f"{label}: {first}")

    def on_dagster_record(self, record: logging.LogRecord) -> None:
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is not None:
            self._on_event(event)
        elif record.levelno >= logging.WARNING:
            text = str(meta.get("orig_message", record.getMessage()))
            self.warning(text, streamed=True, label=_label(record))
        if self._file_handler is not None:
            self._file_handler.handle(record)
        if self.verbose and record.levelno >= logging.INFO:
            self._print(f"{_clock(record)} {record.levelname} dagster - {record.getMessage()}")

    def on_python_record(self, record: logging.LogRecord) -> None:
        if hasattr(record, "dagster_meta"):
            return  # a step's record, already handed over by the Dagster logger
        if record.name == "ingestion.progress":
            self._on_operation(record)
        elif record.name not in _OWN_LOGGERS and record.name != "py.warnings":
            # Python's own warnings (deprecations in libraries) stay in the file.
            if record.levelno >= logging.WARNING:
                self.warning(record.getMessage(), streamed=True, label=_label(record))
            if self.verbose and record.levelno >= logging.INFO:
                self._print(
                    f"{_clock(record)} {record.levelname} {record.name}: {record.getMessage()}"
                )

    def _printed_line(self, log: logging.Logger, line: str) -> None:
        text = _ANSI.sub("", line)
        if self.verbose:
            self._print(line)
        if text.strip():
            log.info(text)
        self._on_dbt_line(text.strip())

    def _on_event(self, event: Any) -> None:
        import dagster as dg

        kind = event.event_type
        stage = self.stages.get(self.step_stage.get(event.step_key or "", ""))
        if kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            data = event.asset_check_evaluation_data
            with self._lock:
                checks = self.stages["checks"]
                # dbt's tests come as checks at the end of its build: the checks begin after it.
                if stage is None or stage.name != "dbt" or stage.ended_at is not None:
                    self._begin(checks)
                if data.passed:
                    checks.passed += 1
                elif data.severity == dg.AssetCheckSeverity.WARN:
                    checks.warned += 1
                else:
                    checks.failures += 1
            self._show("checks")
            return
        if stage is None:
            return
        if kind == dg.DagsterEventType.STEP_START:
            # The stages run in order: once a later one starts, the earlier ones are over (a part
            # of the job runs only some of a stage's steps).
            for name in STAGES[: STAGES.index(stage.name)]:
                if self.stages[name].started_at is not None:
                    self._end(self.stages[name])
        with self._lock:
            if kind == dg.DagsterEventType.STEP_START:
                self._begin(stage)
            elif kind in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
                dg.DagsterEventType.STEP_SKIPPED,
            ):
                stage.steps_left -= 1
                stage.failed |= kind == dg.DagsterEventType.STEP_FAILURE
            elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and stage.name == "ingestion":
                # Per-id operations end with their parents' listing: done when their table is.
                stage.operations_done.add(event.asset_key.path[-1])
            elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and stage.name == "publishing":
                tables = event.step_materialization_data.materialization.metadata.get("tables")
                stage.published = f"published {tables.value} tables" if tables else "published"
            finished = stage.started_at is not None and stage.steps_left <= 0
        self._show(stage.name)
        if finished:
            self._end(stage)

    def _on_operation(self, record: logging.LogRecord) -> None:
        operation = getattr(record, "operation", None)
        if operation is None:
            return
        with self._lock:
            stage = self.stages["ingestion"]
            self._begin(stage)
            stage.operations[operation] = (int(record.pages), int(record.rows))  # type: ignore[attr-defined]
            if getattr(record, "finished", False):
                stage.operations_done.add(operation)
        self._show("ingestion")

    def _on_dbt_line(self, text: str) -> None:
        found = _DBT_FOUND.match(text)
        with self._lock:
            stage = self.stages["dbt"]
            if found:
                stage.total = int(found.group(1))
                stage.tests_total = sum(int(n) for n in _DBT_TESTS.findall(text))
            node = _DBT_NODE.match(text)
            if node is None:
                if found:
                    self._show("dbt")
                return
            status, rest = node.group(3), node.group(4)
            whole = (stage.total or 0) + (stage.tests_total or 0)
            if whole and whole != int(node.group(2)):
                # A part of the project: "Found" counted all of it, so no totals.
                stage.total = stage.tests_total = None
            if status == "START":
                return
            # "OK created sql view model staging.x", "SKIP relation marts.y": a model; else a test.
            if " model " in f" {rest} " or rest.startswith("relation "):
                stage.models_done += 1
            else:
                stage.tests_done += 1
            if status in ("FAIL", "ERROR"):
                stage.failures += 1
        self._show("dbt")

    def _begin(self, stage: Stage) -> None:
        if stage.started_at is not None:
            return
        stage.started_at = time.monotonic()
        if self._progress is not None:
            self._tasks[stage.name] = self._progress.add_task(
                stage.name, total=None, detail=stage.describe()
            )
        elif not self.verbose:
            self._last_plain[stage.name] = time.monotonic()
            self._print(f"{stage.name}: started")

    def _end(self, stage: Stage) -> None:
        with self._lock:
            if stage.ended_at is not None:
                return
            stage.ended_at = time.monotonic()
        self._show(stage.name, final=True)
        checks = self.stages["checks"]
        if stage.name == "dbt" and checks.done and checks.started_at is None:
            with self._lock:
                self._begin(checks)
            self._show("checks")

    def finish(self) -> None:
        """The run is over: every stage that started has ended."""
        for stage in self.stages.values():
            if stage.started_at is not None:
                self._end(stage)

    def _show(self, name: str, *, final: bool = False) -> None:
        stage = self.stages[name]
        if self.verbose or stage.started_at is None:
            return
        detail = stage.describe()
        if self._progress is not None:
            task = self._tasks.get(name)
            if task is None:
                return
            total = 1 if name == "publishing" else stage.total
            completed = stage.done
            if final and not total:
                total = completed = max(stage.done, 1)
            self._progress.update(
                task,
                detail=f"{detail} (FAILED)" if final and stage.failed else detail,
                completed=completed,
                total=total or None,
            )
            if final:
                self._progress.stop_task(task)
            return
        now = time.monotonic()
        with self._lock:
            due = now - self._last_plain.get(name, 0.0) >= self.plain_every_s
            if final:
                outcome = "FAILED" if stage.failed else "done"
                ended = f"{name}: {outcome} in {stage.seconds or 0:.0f} s"
                self._print(f"{ended}: {detail}" if detail else ended)
            elif due and detail and detail != self._last_detail.get(name):
                self._last_plain[name] = now
                self._last_detail[name] = detail
                self._print(f"{name}: {detail}")

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def stage_seconds(self) -> dict[str, float]:
        return {
            name: stage.seconds for name, stage in self.stages.items() if stage.seconds is not None
        }


class _Records(logging.Handler):
    """Hands each record to `on_record` (a method of the console)."""

    def __init__(self, on_record: Callable[[logging.LogRecord], None]) -> None:
        super().__init__()
        self.on_record = on_record

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.on_record(record)
        except Exception:
            self.handleError(record)


class _ToRoot(logging.Handler):
    """Hands a non-propagating logger's records to the root logger's handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _clock(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")


def _label(record: logging.LogRecord) -> str:
    return "error" if record.levelno >= logging.ERROR else "warning"


def _not_page_progress(record: logging.LogRecord) -> bool:
    """Keep each page's progress record out of the file: the finished operation says it all."""
    return not (record.name == "ingestion.progress" and not getattr(record, "finished", True))


class _FileFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "dagster_meta"):
            record = logging.makeLogRecord({**record.__dict__, "name": "dagster"})
        return super().format(record)


class _Lines(io.TextIOBase):
    """A stream that hands each complete line to `on_line`: what was printed during the run.

    It has no file descriptor, so Dagster's compute-log capture leaves it alone.
    """

    def __init__(self, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self._on_line = on_line
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._on_line(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        if line:
            self._on_line(line)
