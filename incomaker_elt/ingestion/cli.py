"""`incomaker-elt ingest`: the API into the raw dataset, without Dagster."""

from __future__ import annotations

import argparse
import sys

from incomaker_elt.contract.command_line import iso_date


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="load the Incomaker API into the raw dataset of the warehouse",
        description=(
            "Fetch every catalogue operation (or those named) from the Incomaker Reporting API "
            "and merge them into the raw tables. Windowed operations continue from where the last "
            "run stopped, minus their lookback."
        ),
    )
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME_OR_GROUP",
        help="operations or groups to load (commas allowed); the parents feeding them load too",
    )
    p.add_argument(
        "--start-date",
        type=iso_date,
        help="first day fetched on a first run (default: INCOMAKER_PARTITIONS_START)",
    )
    p.add_argument(
        "--end-date",
        type=iso_date,
        help="last day fetched, and the snapshot date of aggregates (default: today, UTC)",
    )
    p.set_defaults(handler=ingest)


def _table(summary: object) -> list[str]:
    from incomaker_elt.ingestion.pipeline import LoadSummary

    assert isinstance(summary, LoadSummary)
    tables = sorted(set(summary.rows_loaded) | set(summary.table_rows))
    width = max([len("raw table"), *(len(t) for t in tables)])
    lines = [
        f"{'raw table':<{width}}  {'loaded now':>12}  {'rows in table':>14}  {'requests':>9}",
        f"{'-' * width}  {'-' * 12}  {'-' * 14}  {'-' * 9}",
    ]
    for table in tables:
        now = summary.rows_loaded.get(table, 0)
        total = summary.table_rows.get(table)
        sent = summary.requests_by_operation.get(table)  # a table per operation; children none
        lines.append(
            f"{table:<{width}}  {now:>12,}  {'' if total is None else f'{total:,}':>14}  "
            f"{'' if sent is None else f'{sent:,}':>9}"
        )
    lines.append(
        f"\n{summary.total_rows_loaded:,} rows into {len(summary.rows_loaded)} tables in "
        f"{summary.seconds:.1f} s ({summary.requests:,} requests, {summary.retries:,} retried), "
        f"window {summary.start} .. {summary.end}"
    )
    return lines


def ingest(args: argparse.Namespace) -> int:
    from incomaker_elt.contract.settings import load_settings
    from incomaker_elt.ingestion.errors import IngestionError
    from incomaker_elt.ingestion.pipeline import IngestionIncomplete, run_ingestion

    only = [name for value in (args.only or []) for name in value.split(",") if name.strip()]
    settings = load_settings()

    def report(line: str) -> None:
        print(line, flush=True)

    print(f"ingesting into {settings.warehouse_path} ({'all' if not only else ', '.join(only)})")
    try:
        summary = run_ingestion(
            settings, only=only or None, start=args.start_date, end=args.end_date, report=report
        )
    except IngestionIncomplete as exc:
        print()
        print("\n".join(_table(exc.summary) + _values(exc.summary)))
        for line in exc.summary.problems():
            print(line, file=sys.stderr)
        failed = ", ".join(exc.summary.failed_operations)
        print(
            f"incomaker-elt ingest: {failed} failed; every other operation was loaded. Fix the "
            "cause and run again: the failed operations continue from their last loaded window.",
            file=sys.stderr,
        )
        return 1
    except IngestionError as exc:
        print(f"incomaker-elt ingest: {exc}", file=sys.stderr)
        return 1
    print()
    print("\n".join(_table(summary) + _values(summary)))
    for line in summary.problems():
        print(line)
    return 0


def _values(summary: object) -> list[str]:
    """Values that did not come as their field's type: what was kept, and the override."""
    notes = getattr(summary, "values", None) or []
    if not notes:
        return []
    head = "\nValues that did not come as their field's type (none was changed or dropped):"
    return [head, *(f"  {note.describe()}" for note in notes)]
