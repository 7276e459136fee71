"""`incomaker-elt probe`: first contact with an API, compared with what the catalogue assumes.

Every catalogue operation is asked once with a small page (a per-id operation with the first id
its parent returned), and the answer is read without trusting the catalogue:
- the HTTP status and the server's own message (a 404 path, a 400 parameter); on a 404 the path's
  spelling variants are tried (kebab-case, camelCase, snake_case segments, with or without /v1);
- where the records are (the list of objects in the body, at the top or one level down), which
  keys say the totals and the next link, and which query parameters page it (the catalogue's
  first, then the known dialects': offset/limit, page/size from 0 or 1), by checking that a page
  of 2 holds 2 records and that page 2 is not page 1;
- whether dateFrom/dateTo are honoured (a narrow window against the wide one);
- the fields against the contract: missing, extra, other types; a missing field and an extra one
  of the same JSON type are a rename (`api_names`), a UUID where an integer id was assumed is a
  `string` id;
- the totals the first pages give, from which probe_report.py counts the requests of a first
  full load and of a nightly run.

probe_report.py turns the findings into a proposed override file and a table. The probe goes
through IncomakerClient, so it keeps the configured rate limit and never shows the token.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.contract.paging import DIALECTS, WHOLE_BODY, Paging, dig
from incomaker_elt.ingestion.client import IncomakerClient
from incomaker_elt.ingestion.errors import (
    BrokenBody,
    IngestionError,
    RequestRejected,
    TokenRejected,
)
from incomaker_elt.ingestion.source import RunDates, fixed_params

PROBE_PAGE_SIZE = 2
"""Small enough to be cheap, large enough to tell whether the size parameter is honoured."""

MAX_PATH_VARIANTS = 24
"""Spelling variants tried for a path that answers 404, at most."""

KNOWN_TOTAL_ITEMS = ("paging.totalItems", "totalElements", "totalItems", "total", "totalCount")
KNOWN_TOTAL_PAGES = ("paging.totalPages", "totalPages", "pageCount")
KNOWN_NEXT_LINKS = ("paging.links", "links", "_links.next.href", "next", "paging.next")
KNOWN_POSITIONS = ("paging.offset", "number", "offset", "page", "paging.page")
KNOWN_SIZES = ("paging.limit", "size", "limit", "paging.size")
KNOWN_RECORDS = ("content", "items", "data", "results", "records")
"""Where bodies usually keep their records, preferred among lists of the same length."""

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


# ----------------------------------------------------------------------------- asking


@dataclass(frozen=True)
class Answer:
    """One request's outcome: status (None: no answer at all), decoded body, server message."""

    status: int | None
    body: Any = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BrokenBody(f"not JSON: {exc}") from None


class ApiSession:
    """Asks the API through the client (its retries and rate limit); the same request twice is
    answered from memory."""

    def __init__(self, client: IncomakerClient) -> None:
        self.client = client
        self._answers: dict[tuple[str, tuple[tuple[str, str], ...]], Answer] = {}

    def ask(self, operation: str, path: str, params: Mapping[str, str]) -> Answer:
        key = (path, tuple(sorted(params.items())))
        if key not in self._answers:
            try:
                answer = Answer(200, self.client.get(operation, path, dict(params), _json))
            except RequestRejected as exc:
                answer = Answer(exc.status, None, exc.server_message)
            except TokenRejected:
                raise
            except IngestionError as exc:  # kept failing (5xx, timeouts): no answer
                answer = Answer(None, None, str(exc))
            self._answers[key] = answer
        return self._answers[key]


# ----------------------------------------------------------------------------- bodies


def _entries(body: Any) -> Iterator[tuple[str, Any]]:
    """The values at the top level of a body and one level down, by dotted path."""
    if not isinstance(body, Mapping):
        return
    for key, value in body.items():
        yield key, value
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                yield f"{key}.{sub}", inner


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_record_list(value: Any) -> bool:
    """A list of objects, but not a list of links."""
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        return False
    return not (value and all("href" in v for v in value))


def locate_records(body: Any, expected: str) -> str | None:
    """Where a body keeps its records: the expected place if it holds a list of objects, else
    the (fullest) list of objects it has, at the top level or one level down; None when it has
    none. `$`: the body is one record."""
    if expected == WHOLE_BODY:
        return WHOLE_BODY if isinstance(body, Mapping) else None
    lists = {path: value for path, value in _entries(body) if _is_record_list(value)}
    if expected in lists:
        return expected
    if not lists:
        return None
    return max(lists, key=lambda path: (len(lists[path]), path.rsplit(".", 1)[-1] in KNOWN_RECORDS))


def records_at(body: Any, path: str | None) -> list[dict[str, Any]]:
    found = dig(body, path)
    if path == WHOLE_BODY:
        found = [found] if isinstance(found, Mapping) else None
    return list(found) if isinstance(found, list) else []


def _first_present(body: Any, preferred: str | None, known: Iterable[str]) -> str | None:
    for path in (preferred, *known):
        if path and dig(body, path) is not None:
            return path
    return None


def totals_keys(body: Any, dialect: Paging, records: int) -> dict[str, str | None]:
    """The body's keys for total items and pages, next link, echoed position and size: the
    dialect's own where the body has them, else those of the known dialects, else a numeric
    key whose name says total or count."""
    numbers = {path: value for path, value in _entries(body) if _is_int(value)}
    items = next((p for p in (dialect.total_items, *KNOWN_TOTAL_ITEMS) if p in numbers), None)
    pages = next((p for p in (dialect.total_pages, *KNOWN_TOTAL_PAGES) if p in numbers), None)
    for path, value in numbers.items():
        name = path.rsplit(".", 1)[-1].lower()
        if "total" not in name and "count" not in name:
            continue
        if "page" in name:
            pages = pages or path
        elif value >= records:
            items = items or path
    links = _first_present(body, dialect.next_link, KNOWN_NEXT_LINKS)
    if links is not None and not isinstance(dig(body, links), list | str):
        links = None
    return {
        "total_items": items,
        "total_pages": pages,
        "next_link": links,
        "position_field": _first_present(body, dialect.position_field, KNOWN_POSITIONS),
        "size_field": _first_present(body, dialect.size_field, KNOWN_SIZES),
    }


def says_there_is_more(body: Any, records_path: str) -> bool:
    """A body with a known dialect's total of items larger than the records it holds."""
    if records_path == WHOLE_BODY:
        return False
    held = len(records_at(body, records_path))
    totals = [dig(body, path) for path in KNOWN_TOTAL_ITEMS]
    return any(_is_int(total) and total > held for total in totals)


def no_records_message(body: Any, op: Operation) -> str:
    if isinstance(body, list):
        return (
            "the body is a bare JSON array; the pipeline reads records from an object (a named "
            "array or the whole object)"
        )
    if body is None:
        return "no answer"
    return f"no records at {op.records!r} and no list of objects in the body"


def total_of(body: Any, paging: Paging | None, records_path: str | None) -> int | None:
    """The number of records the whole listing holds, as the body says (or shows, unpaged)."""
    if paging is None or not paging.is_paged:
        return len(records_at(body, records_path)) if records_path else None
    totals = paging.totals(body)
    if totals.total_items is not None:
        return totals.total_items
    if totals.total_pages is not None:  # pages of the probe's size: at most this many records
        return totals.total_pages * PROBE_PAGE_SIZE
    return None


# ----------------------------------------------------------------------------- paging


def paging_key(paging: Paging) -> tuple[Any, ...]:
    return (paging.style, paging.query_params, paging.first_page if paging.style == "page" else 0)


_KNOWN_DIALECTS = (DIALECTS["offset"], DIALECTS["page"], replace(DIALECTS["page"], first_page=1))


def candidate_dialects(catalogued: Paging) -> list[Paging]:
    """The catalogue's paging first, then the known dialects' parameters, each once."""
    unique: dict[tuple[Any, ...], Paging] = {}
    for paging in (catalogued, *_KNOWN_DIALECTS):
        unique.setdefault(paging_key(paging), paging)
    return list(unique.values())


@dataclass
class PagingTrial:
    paging: Paging
    first: Answer
    records: str | None = None
    verdict: str = "rejected"
    """confirmed (page of 2 held 2, page 2 differs), unconfirmed (too few records to tell),
    rejected (the server did not page this way)."""
    reason: str = ""


def try_dialect(
    session: ApiSession, op: Operation, path: str, params: Mapping[str, str], paging: Paging
) -> PagingTrial:
    """Ask pages 1 and 2 of 2 records the way `paging` says, and judge whether it was obeyed."""
    size = PROBE_PAGE_SIZE
    first = session.ask(op.name, path, {**params, **paging.params(0, size)})
    records = locate_records(first.body, paging.records_path(op.records)) if first.ok else None

    def judged(reason: str, verdict: str = "rejected") -> PagingTrial:
        return PagingTrial(paging, first, records, verdict, reason)

    if not first.ok:
        return judged(f"HTTP {first.status}: {first.message}")
    page_one = records_at(first.body, records)
    if records is None:
        return judged("no list of records in the body")
    if len(page_one) > size:
        return judged(f"asked for {size} records, got {len(page_one)}")
    if len(page_one) < size:
        return judged("fewer than 3 records: paging not tested", "unconfirmed")
    second = session.ask(op.name, path, {**params, **paging.params(1, size)})
    if not second.ok:
        return judged(f"page 2: HTTP {second.status}: {second.message}")
    if records_at(second.body, records) == page_one:
        return judged("page 2 repeats page 1")
    if paging.style == "page" and paging.first_page > 0:
        before = session.ask(op.name, path, {**params, **paging.params(-1, size)})
        if before.ok and records_at(before.body, records) not in ([], page_one):
            return judged(f"pages start at {paging.first_page - 1}")
    return judged("", "confirmed")


def _dialect_of_body(body: Any) -> str | None:
    """The known dialect whose totals keys the body carries."""
    for name in ("offset", "page"):
        if dig(body, DIALECTS[name].total_items) is not None:
            return name
    return None


def choose_dialect(trials: Sequence[PagingTrial]) -> PagingTrial | None:
    """The first confirmed dialect; else, among unconfirmed ones, the one whose keys the body
    carries, or the first; None when the server paged no way tried."""
    for trial in trials:
        if trial.verdict == "confirmed":
            return trial
    unconfirmed = [t for t in trials if t.verdict == "unconfirmed"]
    if not unconfirmed:
        return None
    keys = _dialect_of_body(unconfirmed[0].first.body)
    for trial in unconfirmed:
        if keys and paging_key(trial.paging) == paging_key(DIALECTS[keys]):
            return trial
    return unconfirmed[0]


def described_paging(trial: PagingTrial, op: Operation) -> tuple[Paging, str]:
    """The dialect as the body shows it (its totals and link keys), and the entry's records."""
    body, base = trial.first.body, trial.paging
    keys_of = _dialect_of_body(body)
    if keys_of and paging_key(DIALECTS[keys_of]) == paging_key(base):
        base = replace(DIALECTS[keys_of], first_page=base.first_page)
    found = trial.records or op.records
    if base.records is not None and found == base.records:  # where the dialect keeps them
        paging_records, entry_records = base.records, op.records
    else:
        paging_records, entry_records = None, found
    keys = totals_keys(body, base, len(records_at(body, found)))
    return replace(base, records=paging_records, **keys), entry_records


def same_paging(a: Paging, b: Paging, a_records: str, b_records: str) -> bool:
    """The two read a listing the same way (what ingestion uses; echoed fields aside)."""
    if "none" in (a.style, b.style):
        return a.style == b.style
    return (
        paging_key(a) == paging_key(b)
        and a.records_path(a_records) == b.records_path(b_records)
        and (a.total_items, a.total_pages, a.next_link)
        == (b.total_items, b.total_pages, b.next_link)
    )


# ----------------------------------------------------------------------------- paths


def _words(segment: str) -> list[str]:
    return [w.lower() for part in re.split(r"[-_]", segment) for w in _WORDS.findall(part)]


def segment_spellings(segment: str) -> list[str]:
    """kebab-case, camelCase and snake_case spellings of one path segment."""
    words = _words(segment)
    if len(words) < 2:
        return [segment]
    camel = words[0] + "".join(w.capitalize() for w in words[1:])
    return list(dict.fromkeys(["-".join(words), camel, "_".join(words)]))


def path_variants(template: str) -> list[str]:
    """Other spellings of a path template: every segment in one style, one segment changed,
    each with and without a /v1 prefix; placeholders stay."""
    segments = template.strip("/").split("/")
    literal = [i for i, s in enumerate(segments) if not s.startswith("{")]
    spelled: list[list[str]] = []
    for style in range(3):
        whole = list(segments)
        for i in literal:
            options = segment_spellings(segments[i])
            whole[i] = options[min(style, len(options) - 1)]
        spelled.append(whole)
    for i in literal:
        for option in segment_spellings(segments[i]):
            spelled.append([*segments[:i], option, *segments[i + 1 :]])
    variants: list[str] = []
    for parts in spelled:
        path = "/" + "/".join(parts)
        variants += [path, path[3:] if path.startswith("/v1/") else "/v1" + path]
    unique = [v for v in dict.fromkeys(variants) if v != template]
    return unique[:MAX_PATH_VARIANTS]


# ----------------------------------------------------------------------------- fields


def json_kind(value: Any) -> str | None:
    """The catalogue type a JSON value looks like; None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    text = str(value)
    if _ISO_DATE.match(text):
        return "date"
    if _ISO_TIMESTAMP.match(text):
        return "timestamp"
    return "string"


_READ_AS = {"decimal": ("integer",), "timestamp": ("date",), "string": ("date", "timestamp")}
"""Catalogue type -> the other JSON kinds the pipeline reads as that type."""


def fits(kind: str, value: Any) -> bool:
    """A JSON value the pipeline can read as the catalogue type `kind`."""
    seen = json_kind(value)
    if kind == "timestamp" and seen == "string":
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            return False
        return True
    return seen is None or seen == kind or seen in _READ_AS.get(kind, ())


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


@dataclass
class FieldReport:
    missing: list[str] = field(default_factory=list)
    """Contract fields the records lack, not explained by a rename."""
    extra: dict[str, str | None] = field(default_factory=dict)
    """Fields the records have and the contract does not: their type (None: only nulls seen)."""
    renames: dict[str, str] = field(default_factory=dict)
    """Contract field -> the name the API gives it (new or changed)."""
    types: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Contract field -> (catalogue type, type seen)."""
    sampled: int = 0

    def summary(self) -> str:
        if not self.sampled:
            return "no records"
        parts = [
            f"-{len(self.missing)}" if self.missing else "",
            f"+{len(self.extra)}" if self.extra else "",
            f"~{len(self.renames)} renamed" if self.renames else "",
            f"{len(self.types)} retyped" if self.types else "",
        ]
        return " ".join(p for p in parts if p) or "ok"


def _values(records: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    return [r[name] for r in records if name in r and r[name] is not None]


def _kind_of(values: Sequence[Any]) -> str | None:
    if not values:
        return None
    if all(is_uuid(v) for v in values):
        return "string"
    kinds = {json_kind(v) for v in values}
    if kinds <= {"integer", "decimal"} and "decimal" in kinds:
        return "decimal"
    return json_kind(values[0]) if len(kinds) == 1 else "string"


def pair_renames(
    missing: Sequence[str], extra: Mapping[str, list[Any]], contract: Mapping[str, str]
) -> dict[str, str]:
    """A missing contract field and an extra field of the same JSON type are one field renamed;
    where several could pair, the closest names pair first."""
    options = [
        (difflib.SequenceMatcher(None, m.lower(), e.lower()).ratio(), m, e)
        for m in missing
        for e, values in extra.items()
        if all(fits(contract[m], v) for v in values)
    ]
    renames: dict[str, str] = {}
    for _, wanted, seen in sorted(options, key=lambda o: -o[0]):
        if wanted not in renames and seen not in renames.values():
            renames[wanted] = seen
    return renames


def compare_fields(op: Operation, records: Sequence[Mapping[str, Any]]) -> FieldReport:
    """The records' fields against the entry's contract (top level)."""
    report = FieldReport(sampled=len(records))
    if not records:
        return report
    seen_names = list(dict.fromkeys(k for r in records for k in r))
    api_to_contract = {op.api_name(f): f for f in op.fields}
    absent = [f for f in op.fields if op.api_name(f) not in seen_names]
    unknown = {k: _values(records, k) for k in seen_names if k not in api_to_contract}
    renames = pair_renames(absent, unknown, op.fields)
    report.renames = {f: name for f, name in renames.items() if op.api_name(f) != name}
    report.missing = [f for f in absent if f not in renames]
    report.extra = {k: _kind_of(v) for k, v in unknown.items() if k not in renames.values()}
    for name, kind in op.fields.items():
        values = _values(records, renames.get(name, op.api_name(name)))
        if not all(fits(kind, v) for v in values):
            report.types[name] = (kind, _kind_of(values) or kind)
    return report


def id_style(op: Operation, records: Sequence[Mapping[str, Any]], report: FieldReport) -> str:
    """How the entry's id fields look in the answer: integer, uuid, or - when none shows."""
    ids = [f for f in op.fields if f.endswith("Id") or f == "id"]
    values = [v for f in ids for v in _values(records, report.renames.get(f, op.api_name(f)))]
    if not values:
        return "-"
    if any(is_uuid(v) for v in values):
        return "uuid"
    return "integer" if all(isinstance(v, int) for v in values) else "string"


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    wide: dict[str, str]
    nightly: dict[str, str]
    narrow: dict[str, str]
    """A window that must give another answer than the wide one when dates are honoured."""


def probe_windows(op: Operation, dates: RunDates) -> Windows | None:
    """The windows a first load and a nightly run ask for, and a narrow one to compare."""
    if not op.is_windowed:
        return None
    wide = fixed_params(op, dates)
    nightly = wide
    if op.window:
        start = max(dates.start, dates.end - timedelta(days=op.lookback_days))
        nightly = {"dateFrom": start.isoformat(), "dateTo": dates.end.isoformat()}
    day = dates.end.isoformat()
    narrow = nightly if nightly != wide else {"dateFrom": day, "dateTo": day}
    return Windows(wide, nightly, narrow)


def window_verdict(wide: tuple[int | None, list[Any]], narrow: tuple[int | None, list[Any]]) -> str:
    """honoured: the narrow window answers otherwise; ignored: the same non-empty answer."""
    if wide == narrow:
        return "ignored" if (wide[0] or wide[1]) else "no data"
    return "honoured"


# ----------------------------------------------------------------------------- one operation


@dataclass
class Finding:
    """What the probe saw of one operation, and what it proposes."""

    name: str
    path: str
    status: int | None = None
    message: str = ""
    found_path: str | None = None
    paging: Paging | None = None
    records: str | None = None
    paging_note: str = ""
    dates: str = "-"
    fields: FieldReport = field(default_factory=FieldReport)
    ids: str = "-"
    total: int | None = None
    """Records of the wide window (one parent's, for a per-id operation)."""
    nightly_total: int | None = None
    first_load: int | None = None
    nightly: int | None = None
    estimate_note: str = ""
    differences: list[str] = field(default_factory=list)
    """The aspects in which the answer differs from the entry: path, paging, records, fields,
    names, dates."""
    proposal: dict[str, Any] = field(default_factory=dict)
    """The entry's keys the override changes (a new default paging is in the defaults)."""
    notes: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def answered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def matches(self) -> bool:
        return self.answered and not self.differences and not self.fields.missing

    @property
    def verdict(self) -> str:
        if not self.answered:
            return "failed"
        return "ok" if self.matches else "differs"


def _call(op: Operation, template: str, parent_id: Any | None) -> tuple[str, dict[str, str]]:
    """The path and id parameter of one call of `op` (its first parent id for a per-id one)."""
    if op.parent is None or parent_id is None:
        return template, {}
    into = op.parent.into
    if into in op.path_params:
        return template.replace("{" + into + "}", str(parent_id)), {}
    return template, {into: str(parent_id)}


def find_path(
    session: ApiSession, op: Operation, parent_id: Any, params: Mapping[str, str]
) -> tuple[str, Answer]:
    """The catalogue's path if it answers anything but 404, else the first spelling that does."""
    path, id_params = _call(op, op.path, parent_id)
    query = {**params, **id_params, **op.paging.params(0, PROBE_PAGE_SIZE)}
    answer = session.ask(op.name, path, query)
    if answer.status != 404:
        return op.path, answer
    for template in path_variants(op.path):
        tried = session.ask(op.name, _call(op, template, parent_id)[0], query)
        if tried.status not in (None, 404):
            return template, tried
    return op.path, answer


class Prober:
    """Probes operations in catalogue order, parents before the operations they feed."""

    def __init__(self, session: ApiSession, catalogue: Catalogue, dates: RunDates) -> None:
        self.session = session
        self.catalogue = catalogue
        self.dates = dates
        self.findings: dict[str, Finding] = {}

    def probe(self, op: Operation) -> Finding:
        if op.name in self.findings:
            return self.findings[op.name]
        parent_id = None
        if op.parent is not None:
            parent_id = self._first_id(self.probe(self.catalogue.get(op.parent.resource)), op)
        if op.parent is not None and parent_id is None:
            finding = Finding(op.name, op.path, message=f"no id from {op.parent.resource}")
        else:
            finding = self._probe(op, parent_id)
        self.findings[op.name] = finding
        return finding

    def _first_id(self, parent: Finding, op: Operation) -> Any | None:
        assert op.parent is not None
        parent_op = self.catalogue.get(parent.name)
        name = parent.fields.renames.get(op.parent.field, parent_op.api_name(op.parent.field))
        values = _values(parent.sample, name)
        return values[0] if values else None

    def _probe(self, op: Operation, parent_id: Any | None) -> Finding:
        finding = Finding(op.name, op.path)
        windows = probe_windows(op, self.dates)
        base = windows.wide if windows else fixed_params(op, self.dates)
        template, answer = find_path(self.session, op, parent_id, base)
        finding.status, finding.message = answer.status, answer.message
        if template != op.path:
            finding.found_path = template
            finding.notes.append(f"{op.path} answers 404; {template} answers")
        if not finding.answered:
            return finding
        path, id_params = _call(op, template, parent_id)
        params = {**base, **id_params}
        first = self._read_listing(finding, op, path, params)
        if first is None:
            return finding
        records = self._records_path(finding, op)
        finding.sample = records_at(first.body, records)
        finding.total = total_of(first.body, finding.paging, records)
        finding.fields = compare_fields(op, finding.sample)
        finding.ids = id_style(op, finding.sample, finding.fields)
        if windows is not None:
            self._compare_windows(finding, op, path, id_params, windows)
        return finding

    def _records_path(self, finding: Finding, op: Operation) -> str:
        records = finding.records or op.records
        paging = finding.paging
        return paging.records_path(records) if paging and paging.is_paged else records

    def _read_listing(
        self, finding: Finding, op: Operation, path: str, params: dict[str, str]
    ) -> Answer | None:
        """The first page, with the paging dialect and record location the server showed."""
        if not op.is_paged:
            answer = self.session.ask(op.name, path, params)
            finding.paging = op.paging
            finding.records = locate_records(answer.body, op.records) if answer.ok else None
            if finding.records is None:
                finding.status, finding.message = None, no_records_message(answer.body, op)
                return None
            if not says_there_is_more(answer.body, finding.records):
                return answer
            finding.notes.append("catalogued as unpaged, but the answer gives a larger total")
        trials = []
        for dialect in candidate_dialects(op.paging):
            trials.append(try_dialect(self.session, op, path, params, dialect))
            if trials[-1].verdict == "confirmed":
                break
        chosen = choose_dialect(trials)
        if chosen is None:
            return self._unpaged(finding, op, trials)
        finding.paging, finding.records = described_paging(chosen, op)
        if chosen.verdict == "unconfirmed":
            finding.paging_note = chosen.reason
        return chosen.first

    def _unpaged(self, finding: Finding, op: Operation, trials: list[PagingTrial]) -> Answer | None:
        """No dialect was obeyed: an answer to every way of asking, always whole, is unpaged."""
        if all(t.first.ok and t.records for t in trials):
            finding.paging, finding.records = DIALECTS["none"], trials[0].records
            if op.is_paged:
                finding.notes.append("the page size is not honoured: the whole list comes at once")
            return trials[0].first
        reasons = "; ".join(f"{paging_label(t.paging)}: {t.reason}" for t in trials)
        finding.status, finding.message = None, f"no paging dialect worked ({reasons})"
        return None

    def _compare_windows(
        self,
        finding: Finding,
        op: Operation,
        path: str,
        id_params: dict[str, str],
        windows: Windows,
    ) -> None:
        """Whether the API honours dateFrom/dateTo: the total and first records of a narrower
        window against the wide one's."""
        wide = (finding.total, finding.sample)
        paging, records = finding.paging or op.paging, self._records_path(finding, op)
        # All the data may lie in the narrow window (a young account): the first day is asked too.
        first_day = {"dateFrom": windows.wide["dateFrom"], "dateTo": windows.wide["dateFrom"]}
        for window in (windows.narrow, first_day):
            query = {**window, **id_params, **paging.params(0, PROBE_PAGE_SIZE)}
            answer = self.session.ask(op.name, path, query)
            if not answer.ok:
                finding.dates = _failed_window(finding, window, answer)
                return
            seen = (total_of(answer.body, paging, records), records_at(answer.body, records))
            if window is windows.narrow:
                finding.nightly_total = (seen if windows.nightly == windows.narrow else wide)[0]
            finding.dates = window_verdict(wide, seen)
            if finding.dates != "ignored":
                return
        finding.notes.append(
            f"dateFrom/dateTo {windows.narrow['dateFrom']}..{windows.narrow['dateTo']} and "
            f"{first_day['dateFrom']}..{first_day['dateTo']} answer as "
            f"{windows.wide['dateFrom']}..{windows.wide['dateTo']}: the API ignores the "
            "window, so the proposal loads it whole every run"
        )


def _failed_window(finding: Finding, window: Mapping[str, str], answer: Answer) -> str:
    """A window the wide one answered and this one did not: a 404 (nothing in it) shows the
    dates are honoured; anything else leaves it unknown."""
    span = f"{window['dateFrom']}..{window['dateTo']}"
    finding.notes.append(f"the window {span} answers HTTP {answer.status or '-'}: {answer.message}")
    return "honoured" if answer.status == 404 else "unknown"


def paging_label(paging: Paging | None) -> str:
    if paging is None:
        return "?"
    label = "/".join(paging.query_params) or "none"  # offset/limit, page/size
    return f"{label} from {paging.first_page}" if paging.style == "page" else label
