"""The `incomaker-elt` command: one entry point for users, with a subcommand per task."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from incomaker_elt import run
from incomaker_elt.contract.catalogue import CatalogueError
from incomaker_elt.contract.settings import (
    ConfigurationError,
    check_warehouse_writable,
    load_settings,
)
from incomaker_elt.ingestion import cli as ingestion_cli
from incomaker_elt.ingestion import probe_cli
from incomaker_elt.standin import cli as standin_cli


def endpoints(args: argparse.Namespace) -> int:
    from incomaker_elt.contract.catalogue import default_catalogue

    catalogue = default_catalogue()
    rows = [
        {
            "name": op.name,
            "group": op.group,
            "method": op.method,
            "path": op.path,
            "status": op.status,
            "kind": op.kind,
            "paging": op.paging.style,
            "records": op.records_path,
            "params": list(op.params),
            "primary_key": list(op.primary_key),
            "parent": op.parent.resource if op.parent else None,
            "title": op.title,
            "evidence": op.evidence,
        }
        for op in catalogue
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    headers = ["name", "group", "method", "path", "status", "kind", "paging", "parent"]
    table = [headers, *([str(r[h] or "") for h in headers] for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    table.insert(1, ["-" * w for w in widths])
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("confirmed", "inferred", "assumed")}
    print(f"\n{len(rows)} operations: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


def transform(args: argparse.Namespace) -> int:
    """dbt on the warehouse by the path the dbt assets take (orchestration/transform.py)."""
    from incomaker_elt.orchestration.transform import TransformError, build, prepare_manifest

    try:
        if args.parse_only:
            print(f"manifest: {prepare_manifest()}")
            return 0
        summary = build(select=args.select, extra_vars=dict(args.var))
    except TransformError as exc:
        print(f"incomaker-elt transform: {exc}", file=sys.stderr)
        return 1
    print(summary.line())
    for warning in summary.warnings:
        print(f"warning: {warning}")
    return 0


def _project_var(pair: str) -> tuple[str, Any]:
    """NAME=VALUE; the value as JSON when it is JSON (a number, a list), else as text."""
    name, sep, value = pair.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{pair!r}: expected NAME=VALUE")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incomaker-elt",
        description="ELT from the Incomaker Reporting v1 API into a DuckDB warehouse.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("endpoints", help="list the catalogue of API operations")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.set_defaults(handler=endpoints)

    p = sub.add_parser(
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
        type=_project_var,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a project var, e.g. rfm_analysis_date=2026-06-30 (repeatable)",
    )
    p.add_argument("--parse-only", action="store_true", help="only write the manifest")
    p.set_defaults(handler=transform)

    # Each stage of the flow registers its own subcommands: register(subparsers) adds parsers
    # whose defaults carry `handler`. Imports stay light; heavy libraries load in the handler.
    for stage in (standin_cli, ingestion_cli, probe_cli, run):
        stage.register(sub)
    return parser


WAREHOUSE_WRITERS = frozenset({"ingest", "transform", "run"})
"""Subcommands that write the warehouse: its folder is checked before any work starts."""

LOCKED_FOR_THE_WHOLE_COMMAND = frozenset({"ingest"})
"""Subcommands whose library opens the warehouse on its own (dlt): they hold the warehouse lock,
and wait for other processes to let go of the file, for their whole run. `transform` and `run`
take it for each step that opens the warehouse."""

CONFIGURATION_EXIT = 2
"""Exit status of a run stopped by a setting (as argparse uses for a bad option)."""


def _fail(command: str, message: object, status: int) -> int:
    one_line = " ".join(str(message).split())
    print(f"incomaker-elt {command}: {one_line}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a wrong setting ends in one line saying what to fix, and exit 2."""
    from incomaker_elt.orchestration.warehouse import WarehouseBusy, exclusive

    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    command: str = args.command
    try:
        if command in WAREHOUSE_WRITERS and not getattr(args, "parse_only", False):
            check_warehouse_writable(load_settings())
        if command in LOCKED_FOR_THE_WHOLE_COMMAND:
            settings = load_settings()
            note = partial(print, file=sys.stderr, flush=True)
            with exclusive(settings.warehouse_path, note, timeout=settings.warehouse_lock_timeout):
                return handler(args)
        return handler(args)
    except CatalogueError as exc:
        return _fail(command, f"catalogue error: {exc}", CONFIGURATION_EXIT)
    except ConfigurationError as exc:
        return _fail(command, exc, CONFIGURATION_EXIT)
    except PermissionError as exc:
        where = exc.filename or "a file"
        return _fail(
            command,
            f"cannot write {where} (permission denied); check INCOMAKER_WAREHOUSE and "
            "DAGSTER_HOME point at folders you can write",
            CONFIGURATION_EXIT,
        )
    except WarehouseBusy as exc:
        return _fail(command, exc, 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
