"""What `incomaker-elt probe` makes of its findings (incomaker_elt/ingestion/probe.py): the
requests a first load and a nightly run would make, the override that makes the catalogue match,
and the report.

The override has the format load_catalogue reads: `defaults:` (a paging dialect most operations
share) and `operations:` (per entry: path, paging, records, fields, api_names, params/window).
Loading the catalogue with it makes every operation the probe saw match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.contract.paging import WHOLE_BODY, Paging, as_spec
from incomaker_elt.ingestion.client import IncomakerClient
from incomaker_elt.ingestion.probe import (
    ApiSession,
    Finding,
    Prober,
    paging_key,
    paging_label,
    same_paging,
)
from incomaker_elt.ingestion.source import RunDates

# ----------------------------------------------------------------------------- estimates


def _pages(records: int | None, page_size: int, paged: bool) -> int | None:
    if not paged:
        return 1
    if records is None:
        return None
    return max(1, math.ceil(records / page_size))


def _own_records(finding: Finding, nightly: bool) -> int | None:
    """Records of the operation's own window (one parent's, for a per-id operation)."""
    if nightly and finding.nightly_total is not None:
        return finding.nightly_total
    return finding.total


def fill_estimates(catalogue: Catalogue, findings: Mapping[str, Finding]) -> None:
    """Requests a first full load and a nightly run make, from the first pages' totals."""

    def records(name: str, nightly: bool) -> int | None:
        """Records an operation yields in a run (all its parents' records, for per-id ones)."""
        op, finding = catalogue.get(name), findings[name]
        own = 1 if op.records == WHOLE_BODY and finding.answered else _own_records(finding, nightly)
        if op.parent is None or own is None:
            return own
        parents = records(op.parent.resource, nightly)
        return None if parents is None else parents * own

    def requests(name: str, nightly: bool) -> int | None:
        op, finding = catalogue.get(name), findings[name]
        paged = (finding.paging or op.paging).is_paged
        own = _own_records(finding, nightly)
        if op.parent is None:
            return _pages(own, catalogue.page_size, paged)
        parents = records(op.parent.resource, nightly)
        if parents is None or own is None:
            return None
        batch = op.parent.batch or 1
        return math.ceil(parents / batch) * (_pages(own * batch, catalogue.page_size, paged) or 1)

    for name, finding in findings.items():
        if not finding.answered:
            continue
        finding.first_load = requests(name, nightly=False)
        finding.nightly = requests(name, nightly=True)
        parent = catalogue.get(name).parent
        if parent and parent.changed_only and not catalogue.get(parent.resource).window:
            finding.estimate_note = "nightly: at most (only changed parents are asked)"


# ----------------------------------------------------------------------------- proposal


def paging_change(
    op: Operation, finding: Finding, old_default: Paging, new_default: Paging
) -> Any | None:
    """The entry's `paging` value that makes it read as the server answered; None: no change.
    An entry without its own paging follows the (maybe new) default."""
    seen, records = finding.paging, finding.records or op.records
    if seen is None:
        return None
    after = new_default if op.paging == old_default else op.paging
    if same_paging(seen, after, records, records):
        return None
    if seen.style == "none":
        return "none"
    if same_paging(seen, new_default, records, records):
        return "default"
    return as_spec(seen)


def entry_changes(
    op: Operation, finding: Finding, old_default: Paging, new_default: Paging
) -> dict[str, Any]:
    """The keys of the entry that must change for the catalogue to match the finding."""
    changes: dict[str, Any] = {}
    if finding.found_path:
        changes["path"] = finding.found_path
    paging = paging_change(op, finding, old_default, new_default)
    if paging is not None:
        changes["paging"] = paging
    records = finding.records or op.records
    if records != op.records:
        changes["records"] = records
    report = finding.fields
    if report.renames:
        names = {**op.api_names, **report.renames}
        changes["api_names"] = {f: n for f, n in names.items() if f != n}
    if report.types or report.extra:
        fields = {f: report.types.get(f, (k, k))[1] for f, k in op.fields.items()}
        fields.update({name: kind or "string" for name, kind in report.extra.items()})
        changes["fields"] = fields
    if finding.dates == "ignored":
        changes["params"] = [p for p in op.params if p not in ("dateFrom", "dateTo")]
        changes["window"] = None
    return changes


def differences(op: Operation, finding: Finding) -> list[str]:
    """The aspects of the entry the answer contradicts."""
    records, seen = finding.records or op.records, finding.paging
    contradicted = {
        "path": bool(finding.found_path),
        "paging": seen is not None and not same_paging(seen, op.paging, records, op.records),
        "records": records != op.records,
        "fields": bool(finding.fields.types or finding.fields.extra),
        "names": bool(finding.fields.renames),
        "dates": finding.dates == "ignored",
    }
    return [aspect for aspect, differs in contradicted.items() if differs]


def common_paging(catalogue: Catalogue, findings: Iterable[Finding]) -> Paging:
    """The paging most paged operations showed (the catalogue's default when none did)."""
    seen: dict[tuple[Any, ...], tuple[int, Paging]] = {}
    for finding in findings:
        op = catalogue.get(finding.name)
        paging = finding.paging
        if paging is None or not paging.is_paged or op.paging != catalogue.paging:
            continue
        key = (paging_key(paging), paging.records, paging.total_items, paging.total_pages)
        count, _ = seen.get(key, (0, paging))
        seen[key] = (count + 1, paging)
    if not seen:
        return catalogue.paging
    return max(seen.values(), key=lambda pair: pair[0])[1]


def shared_records(catalogue: Catalogue, findings: Sequence[Finding], default: Paging) -> Paging:
    """The dialect with its records' place, when every operation paged its way keeps them in
    the same place instead of its own named array (Spring's `content`, a `data.items`)."""
    followers = [
        f
        for f in findings
        if f.paging is not None
        and f.paging.is_paged
        and paging_key(f.paging) == paging_key(default)
        and catalogue.get(f.name).paging == catalogue.paging
    ]
    places = {f.records for f in followers}
    moved = [f for f in followers if f.records != catalogue.get(f.name).records]
    if len(places) != 1 or len(moved) < 2 or default.records is not None:
        return default
    place = places.pop()
    for finding in followers:
        assert finding.paging is not None
        finding.paging = replace(finding.paging, records=place)
        finding.records = catalogue.get(finding.name).records
    return replace(default, records=place)


def propose(catalogue: Catalogue, findings: Sequence[Finding]) -> dict[str, Any]:
    """The override (defaults and operations) that makes the catalogue match the findings."""
    default = shared_records(catalogue, findings, common_paging(catalogue, findings))
    proposal: dict[str, Any] = {}
    if not same_paging(default, catalogue.paging, "", ""):
        proposal["defaults"] = {"paging": as_spec(default)}
    operations: dict[str, Any] = {}
    for finding in findings:
        if not finding.answered:
            continue
        op = catalogue.get(finding.name)
        finding.differences = differences(op, finding)
        finding.proposal = entry_changes(op, finding, catalogue.paging, default)
        if finding.proposal:
            operations[op.name] = finding.proposal
    if operations:
        proposal["operations"] = operations
    return proposal


def merged_with_existing(proposal: dict[str, Any], in_use: Path | None) -> dict[str, Any]:
    """The proposal on top of the override file already in use, so one file holds both."""
    existing = yaml.safe_load(in_use.read_text()) if in_use and in_use.is_file() else None
    if not isinstance(existing, dict):
        return proposal
    merged: dict[str, Any] = {
        "defaults": {**(existing.get("defaults") or {}), **proposal.get("defaults", {})},
        "operations": {
            name: dict(changes) for name, changes in (existing.get("operations") or {}).items()
        },
    }
    for name, changes in proposal.get("operations", {}).items():
        merged["operations"].setdefault(name, {}).update(changes)
    return {k: v for k, v in merged.items() if v}


OVERRIDE_HEADER = """\
# Proposed by `incomaker-elt probe` on {day} from what {where} answered.
# Read it, then point INCOMAKER_CATALOGUE_OVERRIDES at this file (README, 'catalogue overrides');
# `incomaker-elt probe` again should then show every operation matching.
"""


def override_text(proposal: Mapping[str, Any], day: date, where: str) -> str:
    body = yaml.safe_dump(dict(proposal), sort_keys=False, allow_unicode=True, width=100)
    return OVERRIDE_HEADER.format(day=day.isoformat(), where=where) + body


# ----------------------------------------------------------------------------- the run


@dataclass
class ProbeReport:
    findings: list[Finding]
    proposal: dict[str, Any]
    page_size: int
    requests_made: int = 0

    @property
    def matching(self) -> list[Finding]:
        return [f for f in self.findings if f.matches]

    @property
    def all_match(self) -> bool:
        return len(self.matching) == len(self.findings)


def probe_api(
    client: IncomakerClient,
    catalogue: Catalogue,
    dates: RunDates,
    only: Sequence[str] | None = None,
) -> ProbeReport:
    """Probe the selected operations (all by default; their parents are asked too, for ids)."""
    prober = Prober(ApiSession(client), catalogue, dates)
    findings = [prober.probe(op) for op in catalogue.select(only)]
    fill_estimates(catalogue, prober.findings)
    proposal = propose(catalogue, findings)
    return ProbeReport(findings, proposal, catalogue.page_size, client.requests)


def finding_row(finding: Finding) -> dict[str, Any]:
    """One operation's finding as plain data (for --json)."""
    return {
        "operation": finding.name,
        "status": finding.status,
        "message": finding.message,
        "path": finding.found_path or finding.path,
        "paging": paging_label(finding.paging) if finding.answered else None,
        "records": finding.records,
        "dates": finding.dates,
        "missing_fields": finding.fields.missing,
        "extra_fields": finding.fields.extra,
        "renamed_fields": finding.fields.renames,
        "type_differences": {k: list(v) for k, v in finding.fields.types.items()},
        "ids": finding.ids,
        "total_records": finding.total,
        "requests_first_load": finding.first_load,
        "requests_nightly": finding.nightly,
        "verdict": finding.verdict,
        "differences": finding.differences,
        "proposal": finding.proposal,
        "notes": finding.notes,
    }


def _shown(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def report_table(report: ProbeReport) -> list[str]:
    """The findings as a table a person can read, then the notes and the totals."""
    headers = (
        "operation",
        "HTTP",
        "paging",
        "records",
        "dates",
        "fields",
        "ids",
        "full load",
        "nightly",
        "verdict",
    )
    rows = [
        (
            f.name,
            str(f.status or "-"),
            paging_label(f.paging) + (" *" if "paging" in f.differences else "")
            if f.answered
            else "-",
            (f.records or "-") + (" *" if "records" in f.differences else ""),
            f.dates,
            f.fields.summary() if f.answered else "-",
            f.ids,
            _shown(f.first_load) if f.answered else "-",
            _shown(f.nightly) if f.answered else "-",
            f.verdict,
        )
        for f in report.findings
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = {1, 7, 8}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [line(headers), line(["-" * w for w in widths])]
    lines[0] += "    (* differs from the catalogue)"
    lines += [line(r) for r in rows]
    notes = _notes(report.findings)
    if notes:
        lines += ["", "notes:", *notes]
    first = sum(f.first_load or 0 for f in report.findings)
    nightly = sum(f.nightly or 0 for f in report.findings)
    known = all(f.first_load is not None for f in report.findings)
    approx = "" if known else " (at least: some operations gave no totals)"
    lines += [
        "",
        f"{len(report.matching)} of {len(report.findings)} operations match the catalogue.",
        f"requests at {report.page_size:,} records a page: a first full load ~{first:,}, "
        f"a nightly run ~{nightly:,}{approx}; the probe made {report.requests_made:,}.",
    ]
    return lines


def _notes(findings: Sequence[Finding]) -> list[str]:
    lines = []
    for f in findings:
        said = []
        if not f.answered or (f.status and f.message):
            said.append(f"HTTP {f.status or '-'}: {f.message or 'no answer'}")
        said += f.notes
        if f.paging_note:
            said.append(f"paging: {f.paging_note}")
        report = f.fields
        if report.missing:
            said.append(
                f"missing fields: {', '.join(report.missing)} (nothing to propose: they stay in "
                "the contract and load as null; correct the entry if the API has dropped them)"
            )
        if report.extra:
            extra = ", ".join(f"{k} ({v or 'null'})" for k, v in report.extra.items())
            said.append(f"extra fields: {extra}")
        if report.renames:
            said.append("renamed: " + ", ".join(f"{k} -> {v}" for k, v in report.renames.items()))
        if report.types:
            types = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in report.types.items())
            said.append(f"types: {types}")
        if f.estimate_note:
            said.append(f.estimate_note)
        lines += [f"  {f.name}: {s}" for s in said]
    return lines
