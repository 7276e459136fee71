"""The endpoint catalogue: every Incomaker Reporting v1 operation, loaded from catalogue.yaml.

The YAML file is data, not code: a user holding the real API documentation corrects an entry there
or in an override file (INCOMAKER_CATALOGUE_OVERRIDES) and no code changes. This module only loads,
merges and validates it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from incomaker_elt.contract.paging import DIALECTS, Paging, PagingError, paging_from

CATALOGUE_PATH = Path(__file__).with_name("catalogue.yaml")

Kind = Literal["entity", "event", "aggregate", "detail"]
KINDS = ("entity", "event", "aggregate", "detail")
STATUSES = ("confirmed", "inferred", "assumed")
"""confirmed: documented by Reporting v1; inferred: from the vendor's Commons v4 conventions;
assumed: neither says, our best guess."""
HISTORIES = ("all", "latest")
"""all: raw keeps every snapshot of an aggregate; latest: each run's load replaces the table."""
FIELD_TYPES = ("string", "integer", "decimal", "boolean", "date", "timestamp", "list", "object")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class CatalogueError(ValueError):
    """The catalogue or an override file is not valid; the message says which entry and why."""


@dataclass(frozen=True)
class Parent:
    resource: str
    field: str
    into: str
    batch: int | None = None
    changed_only: bool = False
    days_before_today: tuple[str, ...] = ()
    """Parent fields counting days back from the run's today (RFM recency): `changed_only`
    compares the day they point at, so a parent is not changed by today moving on alone."""


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    group: str
    method: str
    path: str
    status: str
    kind: Kind
    paging: Paging
    records: str
    """Where the body keeps the records: a field (dotted for deeper), or $ for the whole body.
    A dialect that fixes one place for all paged bodies (Spring's `content`) takes precedence."""
    primary_key: tuple[str, ...]
    fields: dict[str, str]
    params: tuple[str, ...] = ()
    nested: dict[str, dict[str, str]] = field(default_factory=dict)
    window: str | None = None
    lookback_days: int = 0
    parent: Parent | None = None
    api_names: dict[str, str] = field(default_factory=dict)
    """Contract field -> the name the API gives it, where they differ (an override's renames)."""
    evidence: dict[str, str] = field(default_factory=dict)
    """Aspect (path, paging, ids...) -> where the entry's shape comes from."""
    history: str = "all"
    """Snapshots raw keeps of an aggregate: `all`, or only the `latest` (the load replaces)."""

    @property
    def keeps_latest_only(self) -> bool:
        """Each run's load replaces the raw table: only the latest snapshot is kept."""
        return self.history == "latest"

    @property
    def records_path(self) -> str:
        return self.paging.records_path(self.records) if self.is_paged else self.records

    def api_name(self, field: str) -> str:
        return self.api_names.get(field, field)

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.path))

    @property
    def is_windowed(self) -> bool:
        """The operation takes a dateFrom/dateTo window."""
        return "dateFrom" in self.params and "dateTo" in self.params

    @property
    def is_paged(self) -> bool:
        return self.paging.is_paged

    def url_path(self, **values: Any) -> str:
        """The path with its placeholders filled, e.g. /campaigns/7/recipients."""
        try:
            return self.path.format(**values)
        except KeyError as exc:
            raise CatalogueError(
                f"operation {self.name!r}: no value for path placeholder {exc.args[0]!r}"
            ) from None


@dataclass(frozen=True)
class Catalogue:
    operations: tuple[Operation, ...]
    parameter_types: dict[str, str]
    page_size: int
    max_page_size: int
    source: tuple[Path, ...] = field(default=())
    paging: Paging = DIALECTS["offset"]
    """The default paging dialect of paged entries."""
    timestamp_zone: str = "UTC"
    """The zone whose offset the API's timestamps carry (the stand-in answers in it)."""

    def __iter__(self):
        return iter(self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(op.group for op in self.operations))

    def get(self, name: str) -> Operation:
        for op in self.operations:
            if op.name == name:
                return op
        raise CatalogueError(f"no operation named {name!r}; `incomaker-elt endpoints` lists them")

    def select(self, names_or_groups: Iterable[str] | None) -> tuple[Operation, ...]:
        """Operations named, or belonging to a group named; all of them for None or empty."""
        wanted = [n.strip() for n in (names_or_groups or []) if n and n.strip()]
        if not wanted:
            return self.operations
        names = {op.name for op in self.operations}
        groups = set(self.groups)
        unknown = [w for w in wanted if w not in names and w not in groups]
        if unknown:
            raise CatalogueError(
                f"unknown operation or group: {', '.join(unknown)}. "
                f"Groups: {', '.join(self.groups)}; `incomaker-elt endpoints` lists operations."
            )
        return tuple(op for op in self.operations if op.name in wanted or op.group in wanted)


def _merge_overrides(
    entries: list[dict[str, Any]], defaults: dict[str, Any], overrides: Any, where: Path
) -> None:
    if not isinstance(overrides, dict):
        raise CatalogueError(
            f"{where}: an override file is a mapping with `operations:` (and optionally "
            f"`defaults:`), not a {type(overrides).__name__}; see README, 'catalogue overrides'"
        )
    unknown = sorted(set(overrides) - {"operations", "defaults"})
    if unknown:
        raise CatalogueError(f"{where}: unknown top-level keys {unknown}; use operations, defaults")
    new_defaults = overrides.get("defaults") or {}
    if not isinstance(new_defaults, dict):
        raise CatalogueError(f"{where}: `defaults` must be a mapping of keys")
    defaults.update(new_defaults)
    operations = overrides.get("operations") or {}
    if not isinstance(operations, dict):
        raise CatalogueError(f"{where}: `operations` must map operation names to their changes")
    by_name = {e.get("name"): e for e in entries}
    for name, change in operations.items():
        if name not in by_name:
            raise CatalogueError(f"{where}: override for unknown operation {name!r}")
        if not isinstance(change, dict):
            raise CatalogueError(f"{where}: override for {name!r} must be a mapping of keys")
        entry = by_name[name]
        for key, value in change.items():
            # Field types, renames and nested shapes change per field: `fields: {orderId: string}`
            # retypes one field and keeps the others (nested: per field of each list or object).
            old = entry.get(key)
            per_field = key in ("fields", "api_names", "nested")
            if per_field and isinstance(old, dict) and isinstance(value, dict):
                deep = key == "nested"
                value = {
                    k: {**old.get(k, {}), **v} if deep and isinstance(v, dict) else v
                    for k, v in {**old, **value}.items()
                }
            entry[key] = value


def _operation(
    entry: dict[str, Any],
    parameter_types: dict[str, str],
    default_paging: Paging,
    default_evidence: dict[str, Any],
) -> Operation:
    name = entry.get("name", "<unnamed>")

    def fail(msg: str) -> CatalogueError:
        return CatalogueError(f"catalogue entry {name!r}: {msg}")

    required = ("name", "title", "group", "method", "path", "status", "kind", "records")
    missing = [k for k in required if k not in entry]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    if entry["status"] not in STATUSES:
        raise fail(f"status must be one of {STATUSES}, not {entry['status']!r}")
    if entry["kind"] not in KINDS:
        raise fail(f"kind must be one of {KINDS}, not {entry['kind']!r}")
    spec = entry.get("paging")
    try:
        paging = paging_from(None if spec == "default" else spec, default_paging, "paging")
    except PagingError as exc:
        raise fail(str(exc)) from None
    fields = dict(entry.get("fields") or {})
    bad_types = {f: t for f, t in fields.items() if t not in FIELD_TYPES}
    if bad_types:
        raise fail(f"unknown field types {bad_types}; use one of {FIELD_TYPES}")
    nested = {k: dict(v) for k, v in (entry.get("nested") or {}).items()}
    for path, sub in nested.items():
        head, *rest = path.split(".")
        owner = fields if not rest else nested.get(head, {})
        if owner.get(rest[-1] if rest else head) not in ("list", "object"):
            raise fail(f"nested {path!r} does not name a list or object field")
        bad = {f: t for f, t in sub.items() if t not in FIELD_TYPES}
        if bad:
            raise fail(f"nested {path!r}: unknown field types {bad}")
    params = tuple(entry.get("params") or ())
    unknown_params = [p for p in params if p not in parameter_types]
    if unknown_params:
        raise fail(f"parameters without a type in parameter_types: {unknown_params}")
    pk = tuple(entry.get("primary_key") or ())
    missing_pk = [k for k in pk if k not in fields]
    if missing_pk:
        raise fail(f"primary key fields not among fields: {missing_pk}")
    window = entry.get("window")
    if window and window not in fields:
        raise fail(f"window field {window!r} is not among fields")
    parent = None
    if entry.get("parent"):
        p = entry["parent"]
        try:
            parent = Parent(**{**p, "days_before_today": tuple(p.get("days_before_today") or ())})
        except TypeError as exc:
            raise fail(f"parent: {exc}") from None
    api_names = dict(entry.get("api_names") or {})
    unknown_names = [f for f in api_names if f not in fields]
    if unknown_names:
        raise fail(f"api_names rename fields that are not among fields: {unknown_names}")
    evidence = entry.get("evidence") or {}
    if not isinstance(evidence, dict):
        raise fail("evidence must map an aspect (path, paging, ids...) to its source")
    history = entry.get("history", "all")
    if history not in HISTORIES:
        raise fail(
            f"history must be one of {HISTORIES}, not {history!r}: `all` keeps every snapshot, "
            "`latest` only the last one"
        )
    if history == "latest":
        if entry["kind"] != "aggregate":
            raise fail(
                f"history: latest applies only to kind: aggregate, not {entry['kind']!r} (its "
                "rows are merged by key, not snapshotted); remove `history` from the entry"
            )
        if entry.get("parent") or window:
            what = "a parent" if entry.get("parent") else f"a window ({window!r})"
            raise fail(
                f"history: latest needs an aggregate every run fetches whole, but it has {what}: "
                "a run fetches only part of it and replacing the table would lose the rest; "
                "set `history: all` or remove `history`"
            )
    placeholders = _PLACEHOLDER.findall(entry["path"])
    if placeholders and (parent is None or placeholders != [parent.into]):
        raise fail(f"path placeholders {placeholders} must be filled by the parent's `into`")
    return Operation(
        name=name,
        title=entry["title"],
        group=entry["group"],
        method=entry["method"].upper(),
        path=entry["path"],
        status=entry["status"],
        kind=entry["kind"],
        paging=paging,
        records=str(entry["records"]),
        primary_key=pk,
        fields=fields,
        params=params,
        nested=nested,
        window=window,
        lookback_days=int(entry.get("lookback_days") or 0),
        parent=parent,
        api_names=api_names,
        evidence={str(k): str(v) for k, v in {**default_evidence, **evidence}.items()},
        history=history,
    )


def _read_yaml(path: Path, what: str) -> Any:
    # libyaml's safe loader where PyYAML has it: the same documents, a tenth of the parsing time
    # (a first load_catalogue in a process, as each load of the Dagster definitions: 0.19 ->
    # 0.085 s CPU).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(path.read_text(), Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CatalogueError(f"{what} {path} is not valid YAML{at}: {problem}") from None
    except OSError as exc:
        raise CatalogueError(f"{what} {path} cannot be read: {exc.strerror}") from None


def load_catalogue(
    overrides: Path | None = None, setting: str = "INCOMAKER_CATALOGUE_OVERRIDES"
) -> Catalogue:
    """Read catalogue.yaml, apply an override file if given, and validate every entry.

    `setting` is the variable that named the override file, for the messages."""
    raw = _read_yaml(CATALOGUE_PATH, "the catalogue")
    entries = [dict(e) for e in raw["operations"]]
    defaults = dict(raw.get("defaults") or {})
    sources = [CATALOGUE_PATH]
    if overrides is not None:
        what = f"the catalogue override file ({setting})"
        if not overrides.is_file():
            raise CatalogueError(
                f"{what} {overrides} does not exist: point the variable at an existing YAML "
                "file, or unset it"
            )
        try:
            _merge_overrides(entries, defaults, _read_yaml(overrides, what) or {}, overrides)
        except CatalogueError as exc:
            raise CatalogueError(f"{exc} (from {setting})") from None
        sources.append(overrides)
    try:
        default_paging = paging_from(defaults.get("paging"), DIALECTS["offset"], "defaults.paging")
    except PagingError as exc:
        raise CatalogueError(str(exc)) from None
    parameter_types = dict(raw["parameter_types"])
    default_evidence = defaults.get("evidence") or {}
    if not isinstance(default_evidence, dict):
        raise CatalogueError("defaults.evidence must map an aspect to its source")
    ops = tuple(_operation(e, parameter_types, default_paging, default_evidence) for e in entries)
    names = [op.name for op in ops]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CatalogueError(f"operation names must be unique; repeated: {dupes}")
    by_name = {op.name: op for op in ops}
    for op in ops:
        if op.parent:
            parent = by_name.get(op.parent.resource)
            if parent is None:
                raise CatalogueError(f"{op.name!r}: parent {op.parent.resource!r} is not an entry")
            if op.parent.field not in parent.fields:
                raise CatalogueError(
                    f"{op.name!r}: parent field {op.parent.field!r} is not a field of "
                    f"{parent.name!r}"
                )
            counts = [f for f in op.parent.days_before_today if parent.fields.get(f) != "integer"]
            if op.parent.days_before_today and not op.parent.changed_only:
                raise CatalogueError(
                    f"{op.name!r}: parent.days_before_today only applies with changed_only: true"
                )
            if counts:
                raise CatalogueError(
                    f"{op.name!r}: parent.days_before_today {counts} must be integer fields of "
                    f"{parent.name!r}"
                )
    return Catalogue(
        operations=ops,
        parameter_types=parameter_types,
        page_size=int(defaults.get("page_size", 1000)),
        max_page_size=int(defaults.get("max_page_size", 1000)),
        source=tuple(sources),
        paging=default_paging,
        timestamp_zone=str(defaults.get("timestamp_zone") or "UTC"),
    )


def default_catalogue() -> Catalogue:
    """The catalogue with the overrides the environment names now; each file version is read
    once per process (another file, or the same one edited, is read again)."""
    from incomaker_elt.contract.settings import load_settings

    overrides = load_settings().catalogue_overrides
    version = overrides.stat().st_mtime_ns if overrides and overrides.is_file() else None
    return _catalogue(overrides, version)


@cache
def _catalogue(overrides: Path | None, version: int | None) -> Catalogue:
    return load_catalogue(overrides)
