"""Paging, bounded concurrency and progress: how the pages of an operation are fetched.

How a page is asked for and what its body says about the rest come from the operation's paging
dialect (incomaker_elt/contract/paging.py). When the first page says how many pages there are (a
total of items or pages), the rest are fetched ahead of the consumer, `PAGES_TOGETHER` to a call
of the client's `get_many` (fetched side by side, decoded together), so dlt writes one chunk
while the next pages are on the wire. When it does not, the `next` links are followed one
after the other, and without those a short page ends the listing. Per-id operations
(one listing per campaign, order, contact batch...) run their listings side by side. The client's
in-flight bound caps the requests of the whole run, whatever the number of resources.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from incomaker_elt.contract.catalogue import Operation
from incomaker_elt.contract.paging import PageTotals, pages_without_totals, walk
from incomaker_elt.ingestion.client import ApiClient, PageDecoder
from incomaker_elt.ingestion.records import OneRecordBodies, Page, one_record_bodies
from incomaker_elt.ingestion.values import KeyDoesNotFit, ValueNote, ValueNotes

PAGES_TOGETHER = 4
"""Pages of a listing fetched side by side and decoded together (ArrowDecoder.together)."""

ONE_RECORD_BATCH = 2_000
"""Bodies of a one-record operation read together (~0.5 MB of JSON): one Arrow read instead of
2,000, and bytes held instead of one-row tables."""

progress_log = logging.getLogger("ingestion.progress")
"""Pages and finished operations as records with `operation`, `pages`, `rows` (and `finished`)
attributes, for a live progress display (incomaker_elt.console); silent unless someone listens."""


@dataclass
class OperationProgress:
    pages: int = 0
    rows: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


class Progress:
    """Pages and rows per operation; `report` is called with a line whenever one finishes.

    It also collects the values that did not come as their field's type (`values`): the first
    of each field is reported as it is seen, the run's summary lists them all.
    """

    def __init__(self, report: Callable[[str], None] | None = None, every_s: float = 15.0) -> None:
        self.operations: dict[str, OperationProgress] = {}
        self.values = ValueNotes()
        self._report = report
        self._every_s = every_s
        self._last_report = time.monotonic()
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()

    def _emit(self, line: str) -> None:
        if self._report:
            with self._report_lock:
                self._report(line)

    def page(self, operation: str, rows: int, pages: int = 1) -> None:
        with self._lock:
            op = self.operations.setdefault(operation, OperationProgress())
            op.pages += pages
            op.rows += rows
            pages, total_rows = op.pages, op.rows
            now = time.monotonic()
            due = self._report and now - self._last_report >= self._every_s
            if due:
                self._last_report = now
                running = [
                    f"{name} {p.pages:,} pages/{p.rows:,} rows"
                    for name, p in self.operations.items()
                    if p.finished is None
                ]
        progress_log.debug(
            "%s: page %d", operation, pages, extra=_counts(operation, pages, total_rows, False)
        )
        if due:
            self._emit("  ... " + "; ".join(running))

    def note_values(self, notes: Iterable[ValueNote]) -> None:
        for note in self.values.add(notes):
            self._emit(f"  note: {note.describe()}")

    def done(self, operation: str) -> None:
        with self._lock:
            op = self.operations.setdefault(operation, OperationProgress())
            op.finished = time.monotonic()
            line = (
                f"  {operation:<36} {op.pages:>7,} pages {op.rows:>11,} rows "
                f"{op.finished - op.started:7.1f} s"
            )
            counts = _counts(operation, op.pages, op.rows, True)
        self._emit(line)
        progress_log.info("%s: %d pages, %d rows", operation, op.pages, op.rows, extra=counts)


def _counts(operation: str, pages: int, rows: int, finished: bool) -> dict[str, object]:
    return {"operation": operation, "pages": pages, "rows": rows, "finished": finished}


class Fetcher:
    """Fetches whole listings for the resources of one run."""

    def __init__(
        self,
        client: ApiClient,
        *,
        page_size: int,
        concurrency: int,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.page_size = page_size
        self.concurrency = max(1, concurrency)
        self.progress = progress or Progress()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="incomaker")
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _get(
        self, op: Operation, path: str, params: Mapping[str, str], decode: Callable[[bytes], Page]
    ) -> Page:
        return self._noted(op, self.client.get(op.name, path, params, decode))

    def _get_many(
        self, op: Operation, path: str, group: list[dict[str, str]], decoder: PageDecoder
    ) -> list[Page]:
        pages = self.client.get_many(op.name, path, group, decoder)
        return [self._noted(op, page) for page in pages]

    def _noted(self, op: Operation, page: Page) -> Page:
        """The page counted, its values' notes collected; a key that did not fit stops the run."""
        self.progress.page(op.name, page.rows, page.pages)
        return self._notes_of(page)

    def _notes_of(self, page: Page) -> Page:
        if page.notes:
            for note in page.notes:
                if note.key:  # records without a usable key cannot be merged
                    raise KeyDoesNotFit(note)
            self.progress.note_values(page.notes)
        return page

    def _page_params(self, op: Operation, params: Mapping[str, str], index: int) -> dict[str, str]:
        return {**params, **op.paging.params(index, self.page_size)}

    def _page_count(self, op: Operation, first: Page) -> int | None:
        return op.paging.page_count(first.totals, self.page_size)

    def _fetch(
        self, op: Operation, decode: Callable[[bytes], Page]
    ) -> Callable[[str, dict[str, str]], tuple[Page, int, PageTotals]]:
        def fetch(path: str, params: dict[str, str]) -> tuple[Page, int, PageTotals]:
            page = self._get(op, path, params, decode)
            return page, page.rows, page.totals

        return fetch

    def listing(
        self, op: Operation, path: str, params: Mapping[str, str], decode: PageDecoder
    ) -> Iterator[Page]:
        """Every page of one listing, the later ones fetched ahead while earlier ones are used."""
        if not op.is_paged:
            yield self._get(op, path, params, decode)
            return
        first = self._get(op, path, self._page_params(op, params, 0), decode)
        yield first
        total_pages = self._page_count(op, first)
        if total_pages is None:
            yield from pages_without_totals(
                op.paging,
                self._fetch(op, decode),
                path,
                params,
                self.page_size,
                first.rows,
                first.totals,
                self.client.base_path,
            )
            return
        # The following pages, PAGES_TOGETHER to a call: fetched side by side, decoded together.
        together = min(PAGES_TOGETHER, self.concurrency)
        pending: deque[Future[list[Page]]] = deque()
        following = 1
        try:
            while following < total_pages or pending:
                while following < total_pages and len(pending) * together < self.concurrency:
                    upto = min(total_pages, following + together)
                    group = [self._page_params(op, params, i) for i in range(following, upto)]
                    pending.append(self.pool.submit(self._get_many, op, path, group, decode))
                    following = upto
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def _whole_listing(
        self, op: Operation, path: str, params: Mapping[str, str], decode: Callable[[bytes], Page]
    ) -> list[Page]:
        """One listing fetched page after page, for running many listings side by side."""
        fetch = self._fetch(op, decode)
        pages = walk(op.paging, fetch, path, params, self.page_size, self.client.base_path)
        return list(pages)

    def _one_record_body(
        self, op: Operation, path: str, params: Mapping[str, str], bodies: OneRecordBodies
    ) -> list[bytes | Page]:
        """The answer of one request of a one-record operation: its body kept, or its page."""
        answer = self.client.get(op.name, path, params, bodies.accept)
        if isinstance(answer, bytes):
            self.progress.page(op.name, 1)
            return [answer]
        return [self._noted(op, answer)]

    def many_listings(
        self,
        op: Operation,
        requests: Iterable[tuple[str, dict[str, str], object]],
        decode: Callable[[bytes], Page],
    ) -> Iterator[tuple[object, list[Page]]]:
        """Listings for many (path, params, tag) at once, yielded as (tag, pages) when done.

        An operation whose answers are one flat record each (records.one_record_bodies: a detail
        per id, not an aggregate, so no record carries its request) has its bodies decoded
        together, `ONE_RECORD_BATCH` at a time, and yielded as one page with the tag of the
        last of them.
        """
        bodies = one_record_bodies(op)
        kept: list[bytes] = []
        kept_tag: object = None
        pending: dict[Future[list[Any]], object] = {}
        queue = iter(requests)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < 2 * self.concurrency:
                    try:
                        path, params, tag = next(queue)
                    except StopIteration:
                        exhausted = True
                        break
                    if bodies is None:
                        future = self.pool.submit(self._whole_listing, op, path, params, decode)
                    else:
                        future = self.pool.submit(self._one_record_body, op, path, params, bodies)
                    pending[future] = tag
                if bodies is not None and kept and (not pending or len(kept) >= ONE_RECORD_BATCH):
                    yield kept_tag, [self._notes_of(page) for page in bodies.decode(kept)]
                    kept = []
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    tag = pending.pop(future)
                    pages = future.result()
                    if bodies is not None:
                        kept += [answer for answer in pages if isinstance(answer, bytes)]
                        kept_tag = tag
                        pages = [answer for answer in pages if isinstance(answer, Page)]
                        if not pages:
                            continue
                    yield tag, pages
        finally:
            for future in pending:
                future.cancel()


class ArrowChunks:
    """Collects page tables into chunks of about `rows` rows: dlt handles few big tables best."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._tables: list[pa.Table] = []
        self._count = 0

    def add(self, table: pa.Table) -> pa.Table | None:
        if table.num_rows:
            self._tables.append(table)
            self._count += table.num_rows
        return self.flush() if self._count >= self.rows else None

    def flush(self) -> pa.Table | None:
        if not self._tables:
            return None
        # Pages with extra fields (schema drift) or all-null columns unify to one schema.
        try:
            table = pa.concat_tables(self._tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # A field the catalogue does not know came as different types on different pages.
            tables = _as_text_where_types_differ(self._tables)
            table = pa.concat_tables(tables, promote_options="permissive")
        self._tables, self._count = [], 0
        return table


def _as_text_where_types_differ(tables: list[pa.Table]) -> list[pa.Table]:
    """The tables with every column whose type differs between them made text (JSON text)."""
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field_ in table.schema:
            if not pa.types.is_null(field_.type):
                types.setdefault(field_.name, set()).add(field_.type)
    mixed = {name for name, found in types.items() if len(found) > 1}
    out = []
    for table in tables:
        for name in mixed & set(table.column_names):
            index = table.schema.get_field_index(name)
            texts = [
                None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                for v in table.column(index).to_pylist()
            ]
            table = table.set_column(index, name, pa.array(texts, pa.string()))
        out.append(table)
    return out
