"""Reading the stand-in (or any API client) in whatever paging dialect its catalogue describes.

Tests never spell a body shape: the query parameters of a page, where the records are, the totals
and the `next` links all come from the operation's `Paging` (incomaker_elt/contract/paging.py),
exactly as the
pipeline reads them. `api` is an httpx.Client (base URL and token set), a StandIn (asked in
process), or an IncomakerClient.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from incomaker_elt.contract.catalogue import Catalogue, Operation, load_catalogue
from incomaker_elt.contract.paging import WHOLE_BODY, PageTotals, dig, walk
from incomaker_elt.contract.settings import Settings, load_settings
from incomaker_elt.ingestion.client import IncomakerClient
from incomaker_elt.standin import StandIn

HEADERS = {"Authorization": "Bearer standin-token"}
Api = httpx.Client | StandIn | IncomakerClient

ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
"""ISO 8601 with seconds and a zone: `Z` or an offset such as +01:00."""

DIALECT_OVERRIDES: dict[str, dict[str, Any] | None] = {
    "offset": None,  # the catalogue as it is: the vendor's offset/limit with a paging object
    "page": {"defaults": {"paging": "page"}},  # Spring Data for every paged entry
}


def standin_settings(folder: Path, token: str) -> Settings:
    """Settings of a pipeline run against a stand-in on this machine: its own warehouse under
    `folder`, the token the stand-in expects, no request cap and no override from the
    environment."""
    return dataclasses.replace(
        load_settings(),
        warehouse_path=folder / "warehouse" / "incomaker.duckdb",
        base_url=None,
        api_token=token,
        dlt_destination=None,
        catalogue_overrides=None,
        requests_per_second=None,
    )


def instant(text: str) -> datetime:
    """The UTC instant of an ISO 8601 timestamp with `Z` or an offset; fails on anything else."""
    assert ISO_TIMESTAMP.match(text), f"not an ISO 8601 timestamp with a zone: {text!r}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def write_override(path: Path, override: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(override), sort_keys=False))
    return path


def dialect_catalogue(dialect: str, folder: Path) -> tuple[Catalogue, Path | None]:
    """The catalogue serving `dialect` and the override file giving it (None: the default)."""
    override = DIALECT_OVERRIDES[dialect]
    if override is None:
        return load_catalogue(), None
    path = write_override(folder / f"paging-{dialect}.yaml", override)
    return load_catalogue(path), path


# ----------------------------------------------------------------------------- requests


def get_body(api: Api, path: str, params: Mapping[str, Any] | None = None, op: str = "") -> Any:
    """The decoded JSON body of a GET that must succeed."""
    query = {k: str(v) for k, v in (params or {}).items()}
    if isinstance(api, StandIn):
        reply = api.handle("GET", path, list(query.items()), HEADERS)
        assert reply.status == 200, f"{op or path} {query}: {reply.status} {reply.body[:300]!r}"
        return orjson.loads(reply.body)
    if isinstance(api, IncomakerClient):
        return api.get(op or path, path, query, orjson.loads)
    response = api.get(path, params=query)
    assert response.status_code == 200, (
        f"{op or path} {query}: {response.status_code} {response.text[:300]}"
    )
    return response.json()


def records_of(op: Operation, body: Any) -> list[dict[str, Any]]:
    """The records of one body of `op`, wherever its dialect keeps them."""
    if op.records == WHOLE_BODY:
        return [body]
    records = dig(body, op.records_path)
    assert isinstance(records, list), (
        f"{op.name}: no record list at {op.records_path!r}: {body!r:.300}"
    )
    return records


def totals_of(op: Operation, body: Any) -> PageTotals:
    return op.paging.totals(body)


def page_params(op: Operation, index: int, size: int, **params: Any) -> dict[str, str]:
    """Query parameters of page `index` (0-based) of `size` records, in the op's dialect."""
    query = {k: str(v) for k, v in params.items()}
    return {**query, **op.paging.params(index, size)} if op.is_paged else query


def page_body(
    api: Api, op: Operation, index: int, size: int, path: str | None = None, **params: Any
) -> Any:
    return get_body(api, path or op.path, page_params(op, index, size, **params), op.name)


def first_page(
    api: Api, op: Operation, size: int = 1000, path: str | None = None, **params: Any
) -> Any:
    """The body of the first page (the only one of an unpaged operation)."""
    return page_body(api, op, 0, size, path, **params)


def first_records(
    api: Api, op: Operation, size: int = 1000, path: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    return records_of(op, first_page(api, op, size, path, **params))


def pages(
    api: Api, op: Operation, size: int = 1000, path: str | None = None, **params: Any
) -> Iterator[Any]:
    """Every body of a listing, walked as the pipeline walks it (totals, next links, short page)."""

    def fetch(at: str, query: dict[str, str]) -> tuple[Any, int, PageTotals]:
        body = get_body(api, at, query, op.name)
        return body, len(records_of(op, body)), totals_of(op, body)

    query = {k: str(v) for k, v in params.items()}
    yield from walk(op.paging, fetch, path or op.path, query, size)


def all_records(
    api: Api, op: Operation, size: int = 1000, path: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every record of a listing, all pages."""
    return [r for body in pages(api, op, size, path, **params) for r in records_of(op, body)]


def total_items(api: Api, op: Operation, path: str | None = None, **params: Any) -> int:
    """How many records a listing holds: its stated total if the dialect has one, else a count."""
    if op.is_paged:
        totals = totals_of(op, first_page(api, op, 1, path, **params))
        if totals.total_items is not None:
            return totals.total_items
        if totals.total_pages is not None:  # pages of one record
            return totals.total_pages
    return len(all_records(api, op, 1000, path, **params))


# ----------------------------------------------------------------------------- paths


def operation_at(catalogue: Catalogue, path: str) -> Operation:
    """The operation answering `path` (literal paths win over placeholders, as in the API)."""
    literal = [op for op in catalogue if op.path == path]
    if literal:
        return literal[0]
    for op in catalogue:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(op.path))
        if re.fullmatch(pattern, path):
            return op
    raise AssertionError(f"no catalogue operation answers {path}")


def records_at(api: Api, catalogue: Catalogue, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every record of the listing at `path` (a concrete path, ids filled in)."""
    return all_records(api, operation_at(catalogue, path), 1000, path, **params)


def body_at(api: Api, catalogue: Catalogue, path: str, size: int = 1000, **params: Any) -> Any:
    """The first body at `path` (a concrete path): a page, or an unpaged answer."""
    return first_page(api, operation_at(catalogue, path), size, path, **params)


def first_at(
    api: Api, catalogue: Catalogue, path: str, size: int = 1000, **params: Any
) -> list[dict[str, Any]]:
    """The records of the first page at `path`."""
    op = operation_at(catalogue, path)
    return records_of(op, first_page(api, op, size, path, **params))
