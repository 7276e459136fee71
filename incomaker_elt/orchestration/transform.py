"""Running the dbt project (dbt_project/) on the warehouse, with the settings of the pipeline.

`build()` is what the CLI and the main job call: `dbt build` (models, data tests and unit tests)
through dbt's programmatic runner, with the warehouse path and the business vars taken from
incomaker_elt.contract.settings, raising `TransformError` that names every failed model or test.
`prepare_manifest()` runs `dbt parse` once at install/dev time, so that Dagster reads
target/manifest.json instead of parsing the project on every import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incomaker_elt.contract.currency import REFERENCE_CURRENCY
from incomaker_elt.contract.settings import (
    PROJECT_ROOT,
    RAW_DATASET,
    Settings,
    load_settings,
)

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DBT_TARGET_DIR = DBT_PROJECT_DIR / "target"
MANIFEST_PATH = DBT_TARGET_DIR / "manifest.json"
WAREHOUSE_ENV = "INCOMAKER_WAREHOUSE"

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


def dbt_vars(settings: Settings | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """The project vars that have a single setting in incomaker_elt.contract.settings, plus
    `extra`."""
    values: dict[str, Any] = {
        "reference_currency": REFERENCE_CURRENCY,
        "raw_schema": RAW_DATASET,
    }
    values.update(extra or {})
    return values


@contextmanager
def _warehouse_env(settings: Settings) -> Iterator[None]:
    """The profile reads the warehouse path from INCOMAKER_WAREHOUSE: always an absolute path."""
    previous = os.environ.get(WAREHOUSE_ENV)
    os.environ[WAREHOUSE_ENV] = str(settings.warehouse_path.resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(WAREHOUSE_ENV, None)
        else:
            os.environ[WAREHOUSE_ENV] = previous


def dbt_args(
    command: str,
    settings: Settings | None = None,
    *,
    select: Sequence[str] | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The dbt command line for `command` on this project, with the vars from settings."""
    args = [
        command,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(DBT_TARGET_DIR),
        "--vars",
        json.dumps(dbt_vars(settings, extra_vars)),
    ]
    if select:
        args += ["--select", *select]
    return args + list(extra_args)


def invoke(args: Sequence[str], settings: Settings | None = None) -> Any:
    """Run one dbt command in-process; returns dbt's dbtRunnerResult."""
    from dbt.cli.main import dbtRunner

    settings = settings or load_settings()
    with _warehouse_env(settings):
        try:
            return dbtRunner().invoke(list(args))
        finally:
            _release_warehouse()


def _release_warehouse() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after a command.

    dbt-duckdb holds the database in a class-level environment that outlives the invocation
    (after a failed test it stays open), so the next step of the same process (a read-only check,
    the serving copy, ingestion) could not open the file. There is no public API for this.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # another adapter
        return
    environment = DuckDBConnectionManager._ENV
    if environment is not None and hasattr(environment, "close"):
        environment.close()
    DuckDBConnectionManager.close_all_connections()


def _failures(result: Any) -> list[NodeFailure]:
    failures = []
    for node_result in getattr(result.result, "results", None) or []:
        status = str(getattr(node_result.status, "value", node_result.status)).lower()
        if status not in _FAILED:
            continue
        node = node_result.node
        failures.append(
            NodeFailure(
                name=node.name,
                resource_type=str(getattr(node.resource_type, "value", node.resource_type)),
                status=status,
                message=(node_result.message or "").strip(),
                path=str(getattr(node, "original_file_path", "")),
            )
        )
    return failures


def _counts(result: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node_result in getattr(result.result, "results", None) or []:
        status = str(getattr(node_result.status, "value", node_result.status)).lower()
        counts[status] = counts.get(status, 0) + 1
    return counts


def _error_message(command: str, failures: Sequence[NodeFailure], exception: Any) -> str:
    if not failures:
        return (
            f"dbt {command} failed before running any model: {exception}. Check the project "
            f"({DBT_PROJECT_DIR}) and that the warehouse file is not locked by another process."
        )
    lines = [f"dbt {command} failed: {len(failures)} model(s)/test(s) did not pass:"]
    for f in failures:
        first = f.message.splitlines()[0] if f.message else f.status
        lines.append(f"  - {f.resource_type} {f.name} ({f.path}): {first}")
    lines.append(
        "Re-run one with `dbt build --select <name>` in dbt_project/ (INCOMAKER_WAREHOUSE set) "
        "to see the rows; compiled SQL is under dbt_project/target/compiled."
    )
    return "\n".join(lines)


class _WarehouseLocked(RuntimeError):
    """dbt could not open the warehouse: another process held the file."""


def _lock_conflict(result: Any) -> str | None:
    """DuckDB's lock error, when that is why dbt failed, else None."""
    from incomaker_elt.orchestration.warehouse import LOCK_CONFLICT

    texts = [str(result.exception or "")]
    texts += [
        getattr(r, "message", None) or "" for r in getattr(result.result, "results", None) or []
    ]
    return next((text for text in texts if LOCK_CONFLICT in text), None)


def build(
    settings: Settings | None = None,
    *,
    select: Sequence[str] | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    command: str = "build",
    quiet: bool = False,
    extra_args: Sequence[str] = (),
) -> BuildSummary:
    """`dbt build` on the warehouse of `settings`; raise TransformError naming what failed.

    Takes the warehouse's lock file like every step of a Dagster run, and waits (within
    INCOMAKER_WAREHOUSE_LOCK_TIMEOUT) while another process has the file open.
    """
    from incomaker_elt.orchestration.warehouse import exclusive, retry_while_locked

    settings = settings or load_settings()
    extra_args = [*extra_args, "--quiet"] if quiet else list(extra_args)
    args = dbt_args(command, settings, select=select, extra_vars=extra_vars, extra_args=extra_args)

    def attempt() -> Any:
        result = invoke(args, settings)
        conflict = _lock_conflict(result)
        if conflict:
            raise _WarehouseLocked(conflict)
        return result

    started = time.perf_counter()
    with exclusive(settings.warehouse_path, timeout=settings.warehouse_lock_timeout):
        result = retry_while_locked(
            attempt, settings.warehouse_path, timeout=settings.warehouse_lock_timeout
        )
    seconds = time.perf_counter() - started
    failures = _failures(result)
    if not result.success or failures:
        raise TransformError(_error_message(command, failures, result.exception), failures)
    summary = BuildSummary(command=args, seconds=seconds, counts=_counts(result))
    for node_result in getattr(result.result, "results", None) or []:
        status = str(getattr(node_result.status, "value", node_result.status)).lower()
        if status == "warn":
            summary.warnings.append(f"{node_result.node.name}: {node_result.message}")
    return summary


def prepare_manifest(settings: Settings | None = None) -> Path:
    """`dbt parse`: write target/manifest.json, which Dagster loads without parsing the project.

    Parsing never opens the warehouse, so this works on a machine without one.
    """
    settings = settings or load_settings()
    result = invoke(dbt_args("parse", settings, extra_args=["--quiet"]), settings)
    if not result.success:
        raise TransformError(f"dbt parse failed: {result.exception}")
    return MANIFEST_PATH


# ----------------------------------------------------------------------------- command line


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transform",
        help="run dbt build (models and tests) on the warehouse",
        description=(
            "Build the dbt project's staging views and marts on the warehouse and run its tests, "
            "with the warehouse path and reference currency from the settings."
        ),
    )
    p.add_argument("--select", nargs="+", help="dbt selection, e.g. marts.rfm+ (default: all)")
    p.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a project var, e.g. rfm_analysis_date=2026-06-30 (repeatable)",
    )
    p.add_argument("--parse-only", action="store_true", help="only write the manifest")
    p.set_defaults(handler=transform_command)


def _parse_vars(pairs: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise TransformError(f"--var {pair!r}: expected NAME=VALUE")
        try:
            values[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            values[name.strip()] = value
    return values


def transform_command(args: argparse.Namespace) -> int:
    try:
        if args.parse_only:
            print(f"manifest: {prepare_manifest()}")
            return 0
        summary = build(select=args.select, extra_vars=_parse_vars(args.var))
    except TransformError as exc:
        print(f"incomaker-elt transform: {exc}", file=sys.stderr)
        return 1
    print(summary.line())
    for warning in summary.warnings:
        print(f"warning: {warning}")
    return 0
