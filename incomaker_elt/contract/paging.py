"""How an operation pages: one description, read by everything that pages.

The catalogue names a paging dialect per entry (or in `defaults`); this module turns it into a
`Paging`, which knows
- the query parameters of page n (`offset`/`limit`, or Spring's `page`/`size`, or any names);
- where a body keeps its records (a named array, `content`, a dotted path such as `data.items`);
- where it says how many items or pages there are, and where its `next` link is.

Ingestion, the reconciliation checks, the stand-in (which answers in the dialect it is given),
the probe and the benchmarks all use it, so a third dialect is an override file, not code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

T = TypeVar("T")
Style = Literal["offset", "page", "none"]
STYLES: tuple[str, ...] = ("offset", "page", "none")
WHOLE_BODY = "$"


class PagingError(ValueError):
    """A paging description that cannot work; the message names the key."""


@dataclass(frozen=True)
class Paging:
    """One paging dialect. Paths into the body are dotted (`paging.totalItems`)."""

    style: Style = "offset"
    offset_param: str = "offset"
    """style offset: the query parameter holding the index of the first record asked for."""
    page_param: str = "page"
    """style page: the query parameter holding the page number."""
    first_page: int = 0
    """style page: the number of the first page (Spring: 0)."""
    size_param: str = "limit"
    """the query parameter holding the number of records per page."""
    records: str | None = None
    """where every paged body of this dialect keeps its records (Spring: `content`); unset: the
    entry's own `records` (the vendor's named arrays: `campaigns`, `jobs`...)."""
    total_items: str | None = "paging.totalItems"
    total_pages: str | None = "paging.totalPages"
    next_link: str | None = "paging.links"
    """a list of {href, rel} (the link with rel=next is followed) or an href string."""
    position_field: str | None = "paging.offset"
    """where the body echoes the offset (or page number) it answers; the stand-in writes it."""
    size_field: str | None = "paging.limit"
    """where the body echoes the page size; the stand-in writes it."""

    @property
    def is_paged(self) -> bool:
        return self.style != "none"

    def records_path(self, entry_records: str) -> str:
        return self.records or entry_records

    def params(self, index: int, size: int) -> dict[str, str]:
        """Query parameters of page `index` (0-based) of `size` records."""
        return self.params_at(index * size, size)

    def params_at(self, start: int, size: int) -> dict[str, str]:
        """Query parameters of the page of `size` records starting at record `start`."""
        if self.style == "offset":
            return {self.offset_param: str(start), self.size_param: str(size)}
        if self.style == "page":
            page = self.first_page + start // size
            return {self.page_param: str(page), self.size_param: str(size)}
        return {}

    @property
    def query_params(self) -> tuple[str, ...]:
        """The query parameters this dialect adds to a request."""
        return tuple(self.params_at(0, 1))

    def page_count(self, body_totals: PageTotals, size: int) -> int | None:
        """How many pages the listing has, when the first body says so; else None."""
        if body_totals.total_pages is not None:
            return max(1, body_totals.total_pages)
        if body_totals.total_items is not None:
            return max(1, math.ceil(body_totals.total_items / size))
        return None

    def totals(self, body: Any) -> PageTotals:
        """The totals and next link of a decoded JSON body (a dict)."""
        links = dig(body, self.next_link)
        return PageTotals(
            total_items=_int_or_none(dig(body, self.total_items)),
            total_pages=_int_or_none(dig(body, self.total_pages)),
            next_href=next_href(links),
            has_links=links is not None,
        )

    def envelope(
        self, total_items: int, start: int, size: int, next_query: str | None
    ) -> dict[str, Any]:
        """The body of the page starting at record `start`, without its records (the stand-in
        answers with it)."""
        body: dict[str, Any] = {}
        position = start if self.style == "offset" else self.first_page + start // size
        put(body, self.total_items, total_items)
        put(body, self.total_pages, math.ceil(total_items / size))
        put(body, self.position_field, position)
        put(body, self.size_field, size)
        if self.next_link:
            links = [{"href": next_query, "rel": "next"}] if next_query else []
            if start > 0:
                previous = self.params_at(max(0, start - size), size)
                links.append({"href": "?" + _query(previous), "rel": "prev"})
            put(body, self.next_link, links)
        return body

    def next_query(self, start: int, size: int, total_items: int) -> str | None:
        """The href of the page after the one starting at `start`; None after the last."""
        if start + size >= total_items:
            return None
        return "?" + _query(self.params_at(start + size, size))


@dataclass(frozen=True)
class PageTotals:
    total_items: int | None = None
    total_pages: int | None = None
    next_href: str | None = None
    has_links: bool = False
    """The body has the link field at all (a last page has it without a `next`)."""


MAX_PAGES_WITHOUT_TOTALS = 1_000_000
"""A listing that says no totals and keeps linking to a next page stops here (a server loop)."""

Fetch = Callable[[str, dict[str, str]], tuple[T, int, PageTotals]]
"""Get one page: (path, params) -> (the page, its number of records, its totals)."""


def pages_without_totals(
    paging: Paging,
    fetch: Fetch[T],
    path: str,
    params: Mapping[str, str],
    size: int,
    first_rows: int,
    first_totals: PageTotals,
    base_path: str = "",
) -> Iterator[T]:
    """The pages after the first of a listing whose bodies give no totals: follow the `next`
    links, else ask for the next page until one comes back short."""
    rows, totals, number = first_rows, first_totals, 0
    current_path, current = path, {**params, **paging.params(0, size)}
    while number < MAX_PAGES_WITHOUT_TOTALS:
        number += 1
        if totals.next_href:
            current_path, current = follow(totals.next_href, current_path, current, base_path)
        elif not totals.has_links and rows >= size:
            current = {**params, **paging.params(number, size)}
        else:
            return
        page, rows, totals = fetch(current_path, current)
        if not rows and not totals.next_href:
            return
        yield page


def walk(
    paging: Paging,
    fetch: Fetch[T],
    path: str,
    params: Mapping[str, str],
    size: int,
    base_path: str = "",
) -> Iterator[T]:
    """Every page of a listing, one after the other (the first one alone when not paged)."""
    if not paging.is_paged:
        yield fetch(path, dict(params))[0]
        return
    first, rows, totals = fetch(path, {**params, **paging.params(0, size)})
    yield first
    count = paging.page_count(totals, size)
    if count is None:
        yield from pages_without_totals(paging, fetch, path, params, size, rows, totals, base_path)
        return
    for index in range(1, count):
        yield fetch(path, {**params, **paging.params(index, size)})[0]


DIALECTS: dict[str, Paging] = {
    # The vendor's Commons v4 `Paging` schema: offset/limit, {"<named>": [...], "paging": {...}}.
    "offset": Paging(),
    # Spring Data: page from 0 and size; content, totalElements, totalPages, number, size.
    "page": Paging(
        style="page",
        size_param="size",
        records="content",
        total_items="totalElements",
        total_pages="totalPages",
        next_link=None,
        position_field="number",
        size_field="size",
    ),
    "none": Paging(style="none"),
}
_KEYS = {f.name for f in fields(Paging)}


def paging_from(spec: Any, base: Paging | None = None, where: str = "paging") -> Paging:
    """A Paging from a catalogue value: a dialect name, or a mapping of keys.

    A mapping may name its `dialect` (default: the `base` dialect, i.e. the catalogue's default)
    and change any key of it; `null` unsets an optional path.
    """
    base = base or DIALECTS["offset"]
    if spec is None:
        return base
    if isinstance(spec, str):
        if spec not in DIALECTS:
            raise PagingError(
                f"{where}: unknown paging dialect {spec!r}; use one of {list(DIALECTS)}"
            )
        return DIALECTS[spec]
    if not isinstance(spec, Mapping):
        raise PagingError(
            f"{where}: must be a dialect name or a mapping, not {type(spec).__name__}"
        )
    spec = dict(spec)
    dialect = spec.pop("dialect", None)
    start = paging_from(dialect, base, where) if dialect is not None else base
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise PagingError(f"{where}: unknown keys {unknown}; known: dialect, {sorted(_KEYS)}")
    if "style" in spec and spec["style"] not in STYLES:
        raise PagingError(f"{where}: style must be one of {STYLES}, not {spec['style']!r}")
    if "first_page" in spec and not isinstance(spec["first_page"], int):
        raise PagingError(f"{where}: first_page must be a whole number")
    for key, value in spec.items():
        if key not in ("style", "first_page") and value is not None and not isinstance(value, str):
            raise PagingError(f"{where}: {key} must be text, not {value!r}")
    return replace(start, **spec)


def as_spec(paging: Paging) -> dict[str, Any]:
    """The keys of a Paging that differ from its style's dialect, for writing an override."""
    reference = DIALECTS[paging.style]
    changed = {
        f.name: getattr(paging, f.name)
        for f in fields(Paging)
        if getattr(paging, f.name) != getattr(reference, f.name)
    }
    return {"dialect": paging.style, **changed}


# ----------------------------------------------------------------------------- bodies


def dig(body: Any, path: str | None) -> Any:
    """The value at a dotted path of a decoded body; None where any step is missing."""
    if path is None:
        return None
    if path == WHOLE_BODY:
        return body
    value = body
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def put(body: dict[str, Any], path: str | None, value: Any) -> None:
    """Set a dotted path of a body being built, creating the objects on the way."""
    if path is None:
        return
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def next_href(links: Any) -> str | None:
    """The href of the `next` link: from a list of {href, rel}, or a plain href string."""
    if isinstance(links, str):
        return links or None
    if isinstance(links, list):
        for link in links:
            if isinstance(link, Mapping) and link.get("rel") == "next" and link.get("href"):
                return str(link["href"])
    return None


def follow(
    href: str, path: str, params: Mapping[str, str], base_path: str = ""
) -> tuple[str, dict[str, str]]:
    """The request a `next` href stands for: its path (the current one for a bare query) and the
    current parameters updated by the href's query. A path that starts with the base URL's own
    path (`/v1/orders` below `https://host/v1`) is made relative to it."""
    parts = urlsplit(href)
    query = dict(params)
    query.update(parse_qsl(parts.query, keep_blank_values=True))
    if parts.scheme:  # an absolute link: the client takes it as it is
        return f"{parts.scheme}://{parts.netloc}{parts.path}", query
    if not parts.path:
        return path, query
    base = base_path.rstrip("/")
    if base and parts.path.startswith(base + "/"):
        return parts.path[len(base) :], query
    return parts.path, query


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _query(params: Mapping[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())
