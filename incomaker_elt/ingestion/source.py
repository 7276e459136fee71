"""The dlt source of the Incomaker Reporting API, generated from the catalogue.

One generic function turns each catalogue entry into a dlt resource:
- entity / event / detail tables merge on the entry's primary key;
- aggregate records get `_snapshot_date` (the run's end date) and `_params` (the query that
  produced them) and merge on those plus the key: history accumulates, a re-run of a day replaces;
  entries marked `history: latest` replace the whole table instead: only the latest snapshot stays;
- entries with a `window` load incrementally: a dlt incremental cursor on the window field, with
  the entry's `lookback_days` as its lag, gives the next run's dateFrom;
- entries with a `parent` are dlt transformers fed by the parent's records. `changed_only` ones
  fetch only for parents that are new or changed since the last run: records of the parent's
  incremental window, or, for parents listed whole every run, records whose content changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dlt
import orjson
import pyarrow as pa
from dlt.extract.resource import DltResource
from dlt.extract.source import DltSource

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.contract.columns import snake
from incomaker_elt.ingestion.fetch import ArrowChunks, Fetcher
from incomaker_elt.ingestion.parent_memory import ParentMemory
from incomaker_elt.ingestion.raw_columns import (
    DLT_ID,
    PARAMS,
    SNAPSHOT_DATE,
    column_hints,
    has_nested_lists,
    nested_hints,
    primary_key,
)
from incomaker_elt.ingestion.records import Page, decoder, empty_table, row_ids

SOURCE_NAME = "incomaker"
RFM_WINDOW_DAYS = 365
"""The RFM operations analyse the 365 days ending dateTo, the API's own default window."""
DEFAULT_CHUNK_ROWS = 200_000
REMEMBERED_DAYS = 62
"""How far back a windowed parent's records are remembered for `changed_only` details: twice the
nightly range (31 days), so that a night after missed nights still finds them. An older record
read again (a backfill) has its detail asked for, as if new; the memory lives in dlt's state
(packed: parent_memory.py), which a first load at `large` would otherwise fill with a million
orders."""


@dataclass(frozen=True)
class RunDates:
    start: date
    """First day fetched by a first run; later runs continue from their cursors."""
    end: date
    """Last day fetched; also the snapshot date of aggregates."""
    fixed: bool = False
    """Fetch exactly [start, end] (a backfill of partitions): cursors neither read nor moved."""


def with_ancestors(catalogue: Catalogue, operations: Iterable[Operation]) -> tuple[Operation, ...]:
    """The operations plus the parents that feed them, parents first, in catalogue order.

    A per-id operation cannot run without its parent, and loading the parent too keeps the parent's
    cursor honest: it never advances past records that were not loaded.
    """
    wanted: set[str] = set()
    for op in operations:
        while op is not None and op.name not in wanted:
            wanted.add(op.name)
            op = catalogue.get(op.parent.resource) if op.parent else None
    return tuple(op for op in catalogue if op.name in wanted)


def fixed_params(op: Operation, dates: RunDates) -> dict[str, str]:
    """Date parameters of operations without a cursor: the whole history, or RFM's year."""
    if not op.is_windowed:
        return {}
    start = dates.start
    if op.group == "rfm":
        start = dates.end - timedelta(days=RFM_WINDOW_DAYS - 1)
    return {"dateFrom": start.isoformat(), "dateTo": dates.end.isoformat()}


def canonical_params(params: dict[str, str]) -> str:
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()


def window_cursor(op: Operation, dates: RunDates) -> dlt.sources.incremental:
    """The declared incremental cursor of a windowed entry, lagging by its lookback.

    A fixed window gets an end value instead: dlt then runs the cursor in backfill mode, filters
    to the window and leaves the cursor state alone, so a backfill of old days never rewinds the
    nightly incremental loads.
    """
    kind = op.fields[op.window]

    def moment(day: date) -> Any:
        return day if kind == "date" else datetime.combine(day, datetime.min.time(), tzinfo=UTC)

    # days for date cursors, seconds for datetime cursors
    lag = 0 if dates.fixed else op.lookback_days * (1 if kind == "date" else 86400)
    return dlt.sources.incremental(
        snake(op.window),  # both decoders name top-level columns in dlt's snake_case
        initial_value=moment(dates.start),
        end_value=moment(dates.end + timedelta(days=1)) if dates.fixed else None,
        lag=float(lag) or None,
        # The merge dedupes; boundary dedup by cursor would drop updated rows at the last value.
        primary_key=(),
        on_cursor_value_missing="include",
    )


def _window_params(cursor: dlt.sources.incremental, dates: RunDates) -> dict[str, str] | None:
    start = cursor.start_value
    if isinstance(start, datetime):
        start = start.astimezone(UTC).date()
    if start > dates.end:
        return None
    return {"dateFrom": start.isoformat(), "dateTo": dates.end.isoformat()}


def write_disposition(op: Operation, first_load: bool = False) -> dict[str, Any]:
    """How dlt writes the operation's rows: merged by key, or the table replaced by this run's
    snapshot (`history: latest`; atomically, by pipeline.configure_dlt's replace strategy).

    `first_load`: the table is absent or empty, so there is nothing to merge with or replace.
    Its rows are appended: one copy of the data instead of a staging table, a merge and a second
    copy (over a third of a first load's load step at `large`). Keys the listing repeated are
    settled by recovery.repair, as after every load. Not for operations with nested lists:
    dlt gives their child tables the `_dlt_root_id` a later merge needs only when merging.
    """
    if first_load and not has_nested_lists(op):
        return {"disposition": "append"}
    if op.keeps_latest_only:
        return {"disposition": "replace"}
    return {"disposition": "merge", "strategy": "delete-insert", "deduplicated": True}


class _Records:
    """Turns the pages of one operation into the items the resource yields."""

    def __init__(self, op: Operation, dates: RunDates, chunk_rows: int) -> None:
        self.op = op
        self.arrow = not has_nested_lists(op)
        self.snapshot = dates.end if op.kind == "aggregate" else None
        self.chunks = ArrowChunks(chunk_rows)
        self.rows = 0
        self.window = op.window
        self.key = primary_key(op)

    def _stamp_table(self, table: pa.Table, params: dict[str, str]) -> pa.Table:
        n = table.num_rows
        snapshot = pa.repeat(pa.scalar(self.snapshot, pa.date32()), n)
        table = table.append_column(SNAPSHOT_DATE, snapshot)
        return table.append_column(
            PARAMS, pa.repeat(pa.scalar(canonical_params(params), pa.string()), n)
        )

    def add(self, page: Page, params: dict[str, str]) -> Iterator[Any]:
        self.rows += page.rows
        if not page.rows:
            return
        if self.arrow:
            table = page.records
            if self.snapshot is not None:
                table = self._stamp_table(table, params)
            chunk = self.chunks.add(table)
            if chunk is not None:
                yield self._keyed(chunk)
        else:
            # Top-level names in dlt's spelling, so the cursor and hints name one column.
            records = [{snake(k): v for k, v in r.items()} for r in page.records]
            if self.window:
                _typed_cursor(records, snake(self.window), self.op.fields[self.window])
            if self.snapshot is not None:
                stamp = {SNAPSHOT_DATE: self.snapshot, PARAMS: canonical_params(params)}
                for record in records:
                    record.update(stamp)
            yield records

    def finish(self) -> Iterator[Any]:
        chunk = self.chunks.flush()
        if chunk is not None:
            yield self._keyed(chunk)
        elif not self.rows:
            # An operation with nothing to say still gets its table (dbt's sources expect it).
            if self.arrow:
                yield self._keyed(empty_table(self.op))
            else:
                # Never an Arrow table for an operation with child tables: dlt's Arrow extractor
                # gives the Arrow columns to every nested table of the resource too, and an
                # empty window would then add the parent's NOT NULL key to existing child tables.
                yield dlt.mark.materialize_table_schema()

    def _keyed(self, table: pa.Table) -> pa.Table:
        """Key columns NOT NULL as the hints say (one schema for dlt), and a `_dlt_id` per row."""
        schema = table.schema
        for name in self.key:
            index = schema.get_field_index(name)
            if index >= 0:
                schema = schema.set(index, schema.field(index).with_nullable(False))
        if schema is not table.schema:
            table = table.cast(schema)
        return table.append_column(pa.field(DLT_ID, pa.string(), False), row_ids(table.num_rows))


def _typed_cursor(records: list[dict[str, Any]], field: str, kind: str) -> None:
    """The dict path's cursor values as dates/datetimes, comparable with the cursor's start."""
    parse = date.fromisoformat if kind == "date" else datetime.fromisoformat
    for record in records:
        value = record.get(field)
        if isinstance(value, str):
            record[field] = parse(value)


def _parent_values(item: Any, field: str) -> list[Any]:
    if isinstance(item, pa.Table):
        return item.column(snake(field)).to_pylist() if snake(field) in item.column_names else []
    rows = item if isinstance(item, list) else [item]
    return [row.get(snake(field)) for row in rows]


def _rows_at(item: Any, indices: list[int]) -> list[dict[str, Any]]:
    """The parent's records at `indices` as dicts (only those converted, from Arrow)."""
    if isinstance(item, pa.Table):
        return item.take(pa.array(indices, pa.int64())).to_pylist()
    rows = item if isinstance(item, list) else [item]
    return [rows[i] for i in indices]


def _day(value: Any) -> date | None:
    """The day of a window value as the parent's records hold it (date, datetime or text)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).date()
        except ValueError:
            return None
    return None


_NOT_CONTENT = {DLT_ID, SNAPSHOT_DATE, PARAMS}


def _fingerprint(row: dict[str, Any]) -> str:
    """The parent record's content: its fields, not the `_dlt_id` drawn for it in each run nor
    the snapshot's date and query an aggregate's rows carry."""
    content = {name: value for name, value in row.items() if name not in _NOT_CONTENT}
    body = orjson.dumps(
        content, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME, default=str
    )
    return hashlib.blake2b(body, digest_size=8).hexdigest()


class SourceBuilder:
    """Builds one resource per operation; the fetcher and dates are shared by all of them."""

    def __init__(
        self,
        catalogue: Catalogue,
        fetcher: Fetcher,
        dates: RunDates,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        first_loads: frozenset[str] = frozenset(),
    ) -> None:
        self.catalogue = catalogue
        self.fetcher = fetcher
        self.dates = dates
        self.chunk_rows = chunk_rows
        self.first_loads = first_loads
        self.resources: dict[str, DltResource] = {}

    def build(self, operations: Sequence[Operation]) -> list[DltResource]:
        for op in with_ancestors(self.catalogue, operations):
            self.resources[op.name] = self._resource(op)
        return list(self.resources.values())

    def _hints(self, op: Operation) -> dict[str, Any]:
        return {
            "name": op.name,
            "table_name": op.name,
            "write_disposition": write_disposition(op, op.name in self.first_loads),
            "primary_key": primary_key(op),
            "columns": column_hints(op),
            "nested_hints": nested_hints(op) or None,
        }

    def _resource(self, op: Operation) -> DltResource:
        if op.parent is None:
            return dlt.resource(self._listing_fn(op), **self._hints(op))
        parent = self.resources[op.parent.resource]
        return dlt.transformer(self._per_parent_fn(op), data_from=parent, **self._hints(op))

    # ------------------------------------------------------------------ top-level listings

    def _listing_fn(self, op: Operation) -> Callable[..., Iterator[Any]]:
        fetcher, dates, decode = self.fetcher, self.dates, decoder(op)
        chunk_rows, path = self.chunk_rows, op.url_path()

        def pages(params: dict[str, str] | None) -> Iterator[Any]:
            records = _Records(op, dates, chunk_rows)
            if params is not None:
                for page in fetcher.listing(op, path, params, decode):
                    yield from records.add(page, params)
            yield from records.finish()
            fetcher.progress.done(op.name)

        if op.window:
            declared = window_cursor(op, dates)

            def windowed(cursor: dlt.sources.incremental = declared) -> Iterator[Any]:
                yield from pages(_window_params(cursor, dates))

            return windowed

        def whole() -> Iterator[Any]:
            yield from pages(fixed_params(op, dates))

        return whole

    # ------------------------------------------------------------------ per-parent operations

    def _per_parent_fn(self, op: Operation) -> Callable[..., Iterator[Any]]:
        assert op.parent is not None
        link = op.parent
        parent_op = self.catalogue.get(link.resource)
        fetcher, dates, decode = self.fetcher, self.dates, decoder(op)
        chunk_rows = self.chunk_rows
        # A memory of what the parents looked like last time: a record read again unchanged
        # (a parent listed whole every run, or one of a range the nightly run reads again) is
        # not asked for its detail again.
        window = snake(parent_op.window) if parent_op.window else None
        days_back = [snake(name) for name in link.days_before_today]
        remembered_from = dates.end - timedelta(days=REMEMBERED_DAYS)
        seen_this_run: set[Any] = set()
        oldest = remembered_from.isoformat()
        memory = ParentMemory(  # a windowed parent's days no nightly run reads again: forgotten
            (lambda entry: not isinstance(entry, list) or entry[1] < oldest) if window else None
        )

        def changed_parents(item: Any, values: list[Any]) -> list[Any]:
            days: list[date | None] = [None] * len(values)
            if window is not None:
                days = [_day(v) for v in _parent_values(item, parent_op.window)]
                if len(days) != len(values):  # no window column: nothing to remember them by
                    return values
            remembered: list[int] = []
            changed: list[Any] = []  # too old to be remembered (or undated): asked for, as before
            for i, day in enumerate(days):
                if window is None or (day and day >= remembered_from):
                    remembered.append(i)
                else:
                    changed.append(values[i])
            for i, row in zip(remembered, _rows_at(item, remembered), strict=True):
                pointed_at = {  # the day they point at: unchanged as today moves on
                    name: (dates.end - timedelta(days=row[name])).isoformat()
                    for name in days_back
                    if isinstance(row.get(name), int)
                }
                fingerprint = _fingerprint({**row, **pointed_at})  # a copy: the row is loaded as is
                entry = fingerprint if window is None else [fingerprint, days[i].isoformat()]
                if memory.remember(str(values[i]), entry):
                    changed.append(values[i])
            return changed

        def parent_ids(item: Any) -> list[Any]:
            values = _parent_values(item, link.field)
            if link.changed_only:
                values = changed_parents(item, values)
            fresh = []
            for value in values:
                if value is not None and value not in seen_this_run:
                    seen_this_run.add(value)
                    fresh.append(value)
            return fresh

        def requests(ids: list[Any], base: dict[str, str]) -> Iterator[tuple[str, dict, dict]]:
            if link.batch:
                for i in range(0, len(ids), link.batch):
                    batch = ",".join(str(v) for v in ids[i : i + link.batch])
                    params = {**base, link.into: batch}
                    yield op.url_path(), params, params
            else:
                for value in ids:
                    if link.into in op.path_params:
                        path = op.url_path(**{link.into: value})
                        yield path, base, {**base, link.into: str(value)}
                    else:
                        params = {**base, link.into: str(value)}
                        yield op.url_path(), params, params

        def fetch(item: Any, base: dict[str, str] | None) -> Iterator[Any]:
            ids = parent_ids(item)
            records = _Records(op, dates, chunk_rows)
            if base is None or not ids:
                yield from records.finish()
                return
            for tag, pages in fetcher.many_listings(op, requests(ids, base), decode):
                for page in pages:
                    yield from records.add(page, tag)  # type: ignore[arg-type]
            yield from records.finish()

        if op.window:
            declared = window_cursor(op, dates)

            def windowed(item: Any, cursor: dlt.sources.incremental = declared) -> Iterator[Any]:
                yield from fetch(item, _window_params(cursor, dates))

            return windowed

        def whole(item: Any) -> Iterator[Any]:
            yield from fetch(item, fixed_params(op, dates))

        return whole


def incomaker_source(
    catalogue: Catalogue,
    fetcher: Fetcher,
    dates: RunDates,
    operations: Sequence[Operation] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    first_loads: frozenset[str] = frozenset(),
) -> DltSource:
    """The dlt source: selected operations (all by default) and the parents that feed them.

    `first_loads`: operations whose table is absent or empty (write_disposition)."""
    builder = SourceBuilder(catalogue, fetcher, dates, chunk_rows, first_loads)
    resources = builder.build(operations or catalogue.operations)

    @dlt.source(name=SOURCE_NAME)
    def incomaker() -> list[DltResource]:
        return resources

    return incomaker()
