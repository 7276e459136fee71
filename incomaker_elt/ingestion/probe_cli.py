"""`incomaker-elt probe`: ask the configured API every catalogue operation once, print what
differs from the catalogue, and write the override that would make it match
(incomaker_elt/ingestion/probe.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import httpx

from incomaker_elt.contract.catalogue import Catalogue
from incomaker_elt.contract.settings import Settings

DEFAULT_OVERRIDE_FILE = "incomaker-overrides.yaml"
PROBE_RETRIES = 3
"""Attempts per request (a 429 or 5xx is tried again): a failing operation is reported soon."""
MATCHING, DIFFERING = 0, 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="compare the API with the catalogue and propose an override file",
        description=(
            "Call every catalogue operation once with a small page (per-id operations with the "
            "first id their parent returns) against INCOMAKER_BASE_URL, report per operation "
            "the HTTP status, the paging and record location found, whether dateFrom/dateTo are "
            "honoured, the fields against the catalogue and the requests a full load and a "
            "nightly run would make, and write the override that makes the catalogue match. "
            "Exit 0 when everything matches, 1 when it proposes changes or an operation failed."
        ),
    )
    p.add_argument(
        "--write",
        type=Path,
        default=Path(DEFAULT_OVERRIDE_FILE),
        metavar="PATH",
        help=f"where to write the proposed override (default: ./{DEFAULT_OVERRIDE_FILE})",
    )
    p.add_argument("--force", action="store_true", help="replace the --write file if it exists")
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME_OR_GROUP",
        help="operations or groups to probe (commas allowed); their parents are asked for ids",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(handler=probe)


def probe(args: argparse.Namespace) -> int:
    from incomaker_elt.contract.settings import load_settings

    only = [name for value in (args.only or []) for name in value.split(",") if name.strip()]
    return probe_and_report(
        load_settings(), args.write, force=args.force, only=only, as_json=args.json
    )


def probe_and_report(
    settings: Settings,
    write: Path,
    *,
    force: bool = False,
    only: Sequence[str] = (),
    as_json: bool = False,
    transport: httpx.BaseTransport | None = None,
    today: date | None = None,
    catalogue: Catalogue | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Probe, print the table (or JSON), write the proposal; the exit status."""
    from incomaker_elt.contract.catalogue import load_catalogue
    from incomaker_elt.ingestion.client import IncomakerClient, RetryPolicy
    from incomaker_elt.ingestion.errors import IngestionError
    from incomaker_elt.ingestion.pipeline import credentials
    from incomaker_elt.ingestion.probe_report import (
        finding_row,
        merged_with_existing,
        override_text,
        probe_api,
        report_table,
    )
    from incomaker_elt.ingestion.source import RunDates

    catalogue = catalogue or load_catalogue(settings.catalogue_overrides)
    base_url, token = credentials(settings, transport)
    day = today or datetime.now(UTC).date()
    client = IncomakerClient(
        base_url,
        token,
        transport=transport,
        max_in_flight=1,
        requests_per_second=settings.requests_per_second,
        retry=RetryPolicy(max_attempts=PROBE_RETRIES),
    )
    try:
        report = probe_api(client, catalogue, RunDates(settings.partitions_start, day), only)
    except IngestionError as exc:
        print(f"incomaker-elt probe: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if as_json:
        rows = [finding_row(f) for f in report.findings]
        out(json.dumps({"operations": rows, "proposal": report.proposal}, indent=2, default=str))
    else:
        for line in report_table(report):
            out(line)
    if report.proposal and write.exists() and not force:
        print(
            f"incomaker-elt probe: the proposal was not written: {write} exists; pass --force "
            "to replace it, or --write another path",
            file=sys.stderr,
        )
    elif report.proposal:
        in_use = next(iter(catalogue.source[1:]), None)
        proposal = merged_with_existing(report.proposal, in_use)
        write.write_text(override_text(proposal, day, base_url))
        message = (
            f"\nproposed override written to {write}: read it, then set "
            f"INCOMAKER_CATALOGUE_OVERRIDES={write} and probe again"
        )
        if in_use:
            message += f" (it includes the overrides of {in_use})"
        if as_json:
            print(message.strip(), file=sys.stderr)
        else:
            out(message)
    elif not as_json:
        out("nothing to propose: no override written")
    return MATCHING if report.all_match else DIFFERING
