"""The `incomaker-elt` command: one entry point for users, with a subcommand per task."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence

from ingestion.catalogue import CatalogueError

Command = Callable[[argparse.Namespace], int]


def endpoints(args: argparse.Namespace) -> int:
    from ingestion.catalogue import default_catalogue

    catalogue = default_catalogue()
    rows = [
        {
            "name": op.name,
            "group": op.group,
            "method": op.method,
            "path": op.path,
            "status": op.status,
            "kind": op.kind,
            "paging": op.paging,
            "params": list(op.params),
            "primary_key": list(op.primary_key),
            "parent": op.parent.resource if op.parent else None,
            "title": op.title,
        }
        for op in catalogue
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    headers = ("name", "group", "method", "path", "status", "kind", "paging", "parent")
    table = [[str(r[h] or "") for h in headers] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    confirmed = sum(r["status"] == "confirmed" for r in rows)
    print(f"\n{len(rows)} operations: {confirmed} confirmed, {len(rows) - confirmed} assumed")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incomaker-elt",
        description="ELT from the Incomaker Reporting v1 API into a DuckDB warehouse.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("endpoints", help="list the catalogue of API operations")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.set_defaults(handler=endpoints)

    # Each stage of the flow registers its own subcommands: register(subparsers) adds parsers
    # whose defaults carry `handler`. Imports stay light; heavy libraries load in the handler.
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


SUBCOMMAND_MODULES = (
    "standin.cli",
    "ingestion.cli",
    "incomaker_elt.transform",
    "incomaker_elt.run",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except CatalogueError as exc:
        print(f"incomaker-elt: catalogue error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
