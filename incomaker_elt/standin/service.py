"""The stand-in API: routes requests to the catalogue's operations and answers from the world.

`StandIn.handle` is the whole protocol (auth, routing, faults, parameters, paging, JSON) as one
synchronous function; the in-process httpx transport and the ASGI server are thin shells on it.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any

import numpy as np
import orjson

from incomaker_elt.contract.catalogue import Catalogue, Operation, load_catalogue
from incomaker_elt.contract.paging import WHOLE_BODY, put
from incomaker_elt.standin.calendar import DEFAULT_TODAY, check_today
from incomaker_elt.standin.dialect import render_record
from incomaker_elt.standin.errors import ApiError, not_found
from incomaker_elt.standin.faults import (
    FAULT_HEADER,
    FaultPlan,
    Faults,
    parse_header,
)
from incomaker_elt.standin.frames import JSON_OPTIONS, Frame
from incomaker_elt.standin.operations import all_handlers
from incomaker_elt.standin.operations.ask import Ask, Block, Sql
from incomaker_elt.standin.params import parse_path_value, parse_query
from incomaker_elt.standin.perid import (
    IdIndex,
    Rows,
    block_of,
    ids_per_block,
    indexable,
    key_field,
)
from incomaker_elt.standin.requestlog import RequestLog, RequestRecord, request_log
from incomaker_elt.standin.world import World, build_world

log = logging.getLogger(__name__)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (the slow fault)


def _routes(catalogue: Catalogue) -> list[tuple[re.Pattern[str], Operation]]:
    routes = []
    # Literal segments win over placeholders: /deliveries/conversions is not delivery "conversions".
    for op in sorted(catalogue, key=lambda op: (len(op.path_params), -len(op.path))):
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(op.path.rstrip("/")))
        routes.append((re.compile(f"^{regex}/?$"), op))
    return routes


class ResultCache:
    """Recent query results, so page k of a big list is a slice and not a new query. Bounded by
    entries and by bytes of JSON, so a few million-record lists at `large` fit in memory.

    Concurrent requests for a key not yet cached wait for one computation rather than each
    running it: a client fetching pages or ids in parallel would otherwise run the same big
    query (and hold its result) once per connection."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 600_000_000) -> None:
        self._entries: OrderedDict[tuple, Frame | IdIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[tuple, threading.Lock] = {}
        self.max_entries, self.max_bytes = max_entries, max_bytes

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._lock:
                if key in self._entries:  # cached, or computed while this request waited
                    self._entries.move_to_end(key)
                    return self._entries[key]
            try:
                value = compute()
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            with self._lock:
                self._entries[key] = value
                total = sum(v.nbytes for v in self._entries.values())
                while len(self._entries) > 1 and (
                    len(self._entries) > self.max_entries or total > self.max_bytes
                ):
                    _, dropped = self._entries.popitem(last=False)
                    total -= dropped.nbytes
        return value


def _body(records_path: str, envelope: dict[str, Any], rows: bytes) -> bytes:
    """A JSON body: the envelope with the records (JSON text, comma-separated) at their path."""
    body: dict[str, Any] = {}
    put(body, records_path, _RECORDS)
    _merge(body, envelope)
    return orjson.dumps(body).replace(f'"{_RECORDS}"'.encode(), b"[" + rows + b"]", 1)


_RECORDS = "__standin_records__"


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into.setdefault(key, value)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name, headers.get(name.lower()))


def _error(error: ApiError, headers: dict[str, str] | None = None) -> Reply:
    return Reply(error.status, orjson.dumps(error.body()), dict(headers or {}))


class StandIn:
    """One synthetic Incomaker account served as the Reporting v1 API."""

    def __init__(
        self,
        world: World | None = None,
        *,
        seed: int = 1,
        scale: str = "small",
        today: date = DEFAULT_TODAY,
        token: str = "standin-token",
        faults: Faults | None = None,
        catalogue: Catalogue | None = None,
        per_id_index: bool = True,
    ) -> None:
        self.world = world if world is not None else build_world(seed, scale)
        self._today = check_today(today)
        if not token:
            raise ValueError("the stand-in needs a non-empty token")
        self._token = token
        self.faults = faults or Faults()
        # The catalogue as it is, unless told to speak another dialect: the pipeline's own
        # overrides (INCOMAKER_CATALOGUE_OVERRIDES) describe the API it calls, not this one.
        self.catalogue = catalogue or load_catalogue()
        handlers = all_handlers()
        missing = [op.name for op in self.catalogue if op.name not in handlers]
        if missing:
            raise ValueError(f"no stand-in handler for catalogue operations: {missing}")
        self._handlers = handlers
        self._routes = _routes(self.catalogue)
        self._cache = ResultCache()
        # Per-id indexes (perid.py) apart from the lists, so that walking ids does not evict the
        # list a client is paging through, and the other way round.
        self._indexes = ResultCache(max_entries=256, max_bytes=150_000_000)
        # False: every per-id request runs its own query, as before the indexes (the reference
        # the tests compare the indexes with)
        self.per_id_index = per_id_index
        self._counter = itertools.count()  # next() on it is atomic in CPython
        self.request_log = RequestLog()

    # -- today
    @property
    def today(self) -> date:
        return self._today

    def set_today(self, today: date) -> None:
        """Move today; the API then shows what had happened by its end."""
        self._today = check_today(today)

    def clear_log(self) -> None:
        self.request_log.clear()

    # -- the protocol
    def handle(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
    ) -> Reply:
        pairs = list(query)
        reply = self._answer(next(self._counter), method.upper(), path, pairs, headers)
        params: dict[str, str] = {}
        for key, value in pairs:
            params[key] = f"{params[key]},{value}" if key in params else value
        record = RequestRecord(method.upper(), path, params, reply.status)
        self.request_log.append(record)
        request_log.append(record)
        return reply

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        value = _header(headers, "Authorization") or ""
        scheme, _, credentials = value.partition(" ")
        return scheme.lower() == "bearer" and credentials.strip() == self._token

    def _route(self, path: str) -> tuple[Operation, dict[str, str]] | None:
        for pattern, op in self._routes:
            match = pattern.match(path)
            if match:
                return op, match.groupdict()
        return None

    def _answer(
        self,
        number: int,
        method: str,
        path: str,
        pairs: list[tuple[str, str]],
        headers: Mapping[str, str],
    ) -> Reply:
        if not self._authorised(headers):
            return _error(
                ApiError(403, "missing or wrong bearer token in the Authorization header")
            )
        routed = self._route(path)
        if routed is None:
            return _error(
                not_found(f"no operation at {path}; `incomaker-elt endpoints` lists them")
            )
        op, raw_path = routed
        if method not in (op.method, "HEAD"):
            return _error(ApiError(405, f"{path} answers {op.method} only"), {"Allow": op.method})

        kind = _header(headers, FAULT_HEADER) or self.faults.decide(number)
        try:
            fault = parse_header(kind, self.faults) if kind else FaultPlan(drift=self.faults.drift)
        except ValueError as exc:
            return _error(ApiError(400, str(exc), FAULT_HEADER))
        if fault.status is not None:
            return self._fault_reply(fault)

        try:
            body = self._body(op, raw_path, pairs, fault)
        except ApiError as exc:
            return _error(exc)
        except Exception as exc:  # a bug in the stand-in: say so rather than hang the client
            log.exception("stand-in failed on %s %s", method, path)
            return _error(
                ApiError(500, f"stand-in error on {op.name}: {type(exc).__name__}: {exc}")
            )
        if fault.truncate:
            body = body[: len(body) // 2]
        return Reply(200, body, {}, fault.delay)

    def _fault_reply(self, fault: FaultPlan) -> Reply:
        status = fault.status or 500
        headers = {"Retry-After": str(self.faults.retry_after)} if status == 429 else {}
        message = {
            429: "too many requests; retry after the Retry-After seconds",
            500: "injected fault: internal server error",
            502: "injected fault: bad gateway",
            503: "injected fault: service unavailable",
        }[status]
        return Reply(status, orjson.dumps(ApiError(status, message).body()), headers, fault.delay)

    # -- records and bodies
    def _body(
        self,
        op: Operation,
        raw_path: dict[str, str],
        pairs: list[tuple[str, str]],
        fault: FaultPlan,
    ) -> bytes:
        path_values = {name: parse_path_value(name, value) for name, value in raw_path.items()}
        params, start, size = parse_query(op, self.catalogue, pairs)
        result = self._per_id(op, path_values, params) if op.parent and self.per_id_index else None
        if result is None:
            key = (
                op.name,
                tuple(sorted(path_values.items())),
                tuple(sorted(params.items())),
                self._today,
            )
            result = self._cache.get(key, lambda: self._records(op, path_values, params))
        if op.records == WHOLE_BODY:
            if not len(result):
                raise not_found(f"no {op.name} record for {raw_path}")
            return result.json_bytes(0, 1, fault.drift)
        paging, total = op.paging, len(result)
        if paging.is_paged:
            envelope = paging.envelope(total, start, size, paging.next_query(start, size, total))
        else:
            start, size, envelope = 0, total, {}
        return _body(op.records_path, envelope, result.json_bytes(start, start + size, fault.drift))

    def _per_id(
        self, op: Operation, path_values: dict[str, Any], params: dict[str, Any]
    ) -> Rows | None:
        """A per-id request's records from the indexes of the blocks of its ids; None when the
        request is not one the index answers (no ids, an id out of range)."""
        assert op.parent is not None
        into = op.parent.into
        if into in path_values:
            values: tuple[Any, ...] = (path_values[into],)
        else:
            # a list such as contacts details' ids: its records come in id order, once each
            values = tuple(sorted(params.get(into) or ()))
        span = ids_per_block(op, self.world.counts)
        if not values or not all(indexable(v, span) for v in values):
            return None
        rest = {k: v for k, v in params.items() if k != into}
        today = self._today  # one today for the whole request, even if set_today runs meanwhile
        rest_key = tuple(sorted(rest.items()))
        runs = []
        block, index = None, None
        for value in values:
            if block is None or not block.holds(value):  # sorted: a block's ids come together
                block = block_of(value, span)
                key = (op.name, block, rest_key, today)
                index = self._indexes.get(key, partial(self._index, op, block, rest, today))
            assert index is not None
            if not index.knows(value):
                raise not_found(index.missing.replace("{id}", str(value)))
            runs.append((index.frame, *index.rows(value)))
        return Rows(runs)

    def _index(self, op: Operation, block: Block, params: dict[str, Any], today: date) -> IdIndex:
        ask = Ask(self.world, op, today, params, {}, block=block)
        frame, keys = self._frame(op, self._handlers[op.name](ask), key_field(op))
        known = None
        if ask.known_ids is not None:
            known = np.array([r[0] for r in ask.rows(ask.known_ids)])
        assert keys is not None
        return IdIndex(frame, keys, known, ask.missing)

    def _records(self, op: Operation, path_values: dict[str, Any], params: dict[str, Any]) -> Frame:
        ask = Ask(self.world, op, self._today, params, path_values)
        return self._frame(op, self._handlers[op.name](ask))[0]

    def _frame(
        self, op: Operation, result: Sql | list[dict[str, Any]], key: str | None = None
    ) -> tuple[Frame, np.ndarray | None]:
        """A handler's records in final order (by `key` first, in block mode) as a frame."""
        zone = self.catalogue.timestamp_zone
        if isinstance(result, Sql):
            return Frame.from_query(self.world, result.text, result.params, op, zone, key)
        order = (key, *op.primary_key) if key else op.primary_key
        records = sorted(result, key=lambda r: tuple(r[k] for k in order))
        frame = Frame.from_rows(
            [orjson.dumps(render_record(op, r, zone), option=JSON_OPTIONS) for r in records]
        )
        return frame, np.array([r[key] for r in records]) if key else None

    # -- ways to reach it
    def transport(self):  # -> httpx.BaseTransport (httpx imported lazily)
        """The stand-in inside this process: an httpx transport, no socket."""
        import httpx

        def answer(request: httpx.Request) -> httpx.Response:
            reply = self.handle(
                request.method, request.url.path, request.url.params.multi_items(), request.headers
            )
            if reply.delay:
                # A slow answer really takes that long; client read timeouts only fire over a
                # socket (use serve), since this transport has no timeout of its own.
                time.sleep(reply.delay)
            headers = {"Content-Type": "application/json", **reply.headers}
            return httpx.Response(reply.status, headers=headers, content=reply.body)

        return httpx.MockTransport(answer)

    def serve(self, host: str = "127.0.0.1", port: int = 0):
        """Context manager: a real HTTP server in a background thread, yielding its base URL."""
        from incomaker_elt.standin.server import serve

        return serve(self, host, port)
