"""The HTTP client for the Incomaker Reporting v1 API.

One request = one call of `IncomakerClient.get`, which owns every failure policy:
- 429, 5xx, timeouts, dropped connections and bodies that do not decode (truncated JSON) are
  retried a bounded number of times with exponential backoff and full jitter, waiting at least
  what the server asks for in Retry-After;
- 401/403 fail at once: retrying a rejected token only locks the account;
- any other 4xx fails at once with the operation, its parameters and the server's message.

Two bounds keep a run polite to the server: `max_in_flight` requests at once, and at most
`requests_per_second` requests started per second (a token bucket shared by every worker; retries
count too). `requests_by_operation` counts the requests of each operation for the run summary.

The token travels only in the Authorization header. No message, log line or exception built here
contains it, and the header is marked sensitive so httpx never echoes it either.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

import httpx
import orjson

from incomaker_elt.contract.settings import NO_API_TOKEN
from incomaker_elt.ingestion.errors import (
    ApiUnavailable,
    BrokenBody,
    IngestionError,
    RequestRejected,
    TokenRejected,
)

if TYPE_CHECKING:
    from incomaker_elt.ingestion.records import Page

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=300.0)
USER_AGENT = "incomaker-elt (+https://github.com/incomaker-elt)"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 120.0
    """Waits asked for by the server are honoured up to this; a longer one means the API is down."""

    def backoff(self, attempt: int) -> float:
        """Full jitter: spreads retries of parallel workers so they do not hit the API together."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))


class RateLimit:
    """At most `per_second` requests started per second, in bursts of at most `burst`.

    A token bucket: each request takes a token; tokens come back at `per_second`. A caller that
    finds the bucket empty reserves the next token and sleeps until it is due, outside the lock,
    so callers on many threads are served in turn and the rate holds across all of them.
    `clock` and `sleep` are injectable so tests measure time without waiting for it.
    """

    def __init__(
        self,
        per_second: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not per_second > 0:
            raise ValueError(
                f"a rate limit needs a positive number of requests per second, not {per_second!r}"
            )
        if burst < 1:
            raise ValueError(f"a rate limit needs a burst of at least 1, not {burst!r}")
        self.per_second = float(per_second)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._interval = 1.0 / self.per_second
        # The moment the bucket is full again: `burst` tokens ahead of it are available at once.
        self._full_at = clock()

    def acquire(self) -> float:
        """Take one token, waiting for it if the bucket is empty; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            full_at = max(self._full_at, now)
            due = full_at - (self.burst - 1) * self._interval
            wait = max(0.0, due - now)
            self._full_at = full_at + self._interval
        if wait > 0:
            self._sleep(wait)
        return wait


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _server_message(response: httpx.Response) -> str:
    """The server's own words: the `error` (Commons v4) or `message` (Spring) of a JSON body,
    else the body's text."""
    text = response.text.strip().replace("\n", " ")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        words = [str(body[k]) for k in ("error", "message", "detail") if body.get(k)]
        if body.get("parameter"):
            words.append(f"(parameter {body['parameter']})")
        if words:
            text = " ".join(dict.fromkeys(words))
    return text[:500] or response.reason_phrase


def describe(operation: str, params: Mapping[str, object]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"operation {operation!r}" + (f" ({shown})" if shown else "")


class ApiClient(Protocol):
    """What the fetching asks of a client: `IncomakerClient`, or the same client in a process of
    its own (incomaker_elt/ingestion/client_process.py)."""

    @property
    def base_path(self) -> str: ...

    @property
    def requests(self) -> int: ...

    @property
    def retries(self) -> int: ...

    @property
    def requests_by_operation(self) -> dict[str, int]: ...

    def get(
        self, operation: str, path: str, params: Mapping[str, str], decode: Callable[[bytes], T]
    ) -> T: ...

    def get_many(
        self,
        operation: str,
        path: str,
        params: Sequence[Mapping[str, str]],
        decoder: PageDecoder,
    ) -> list[Page]: ...

    def close(self) -> None: ...


class PageDecoder(Protocol):
    """A decoder of one body (records.ArrowDecoder, records.Decoder), which may also read
    several pages of a listing together."""

    def __call__(self, body: bytes) -> Page: ...

    def together(self, bodies: list[bytes]) -> Page | None: ...


def whole_body(body: bytes) -> bytes:
    """The body as it came: decoded later, with others (`IncomakerClient.get_many`), or not at
    all (an answer whose status is all that counts)."""
    return body


def base_path(base_url: str) -> str:
    """The path of a base URL (`/v1` of https://host/v1): `next` links may start with it."""
    return httpx.URL(base_url.rstrip("/") + "/").path.rstrip("/")


class IncomakerClient:
    """Thread-safe: the workers of one run share it; `max_in_flight` bounds their requests at once
    and `requests_per_second` (None: no cap) how many start per second."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_in_flight: int = 8,
        requests_per_second: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rate_limit: RateLimit | None = None,
    ) -> None:
        if not token:
            raise IngestionError(NO_API_TOKEN)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(max_in_flight)
        if rate_limit is None and requests_per_second is not None:
            rate_limit = RateLimit(requests_per_second)
        self.rate_limit = rate_limit
        # httpx's transport, without its Client: redirects, cookies, auth flows and hooks are
        # nothing this API needs, and skipping them halves httpx's CPU a request (0.45 ms of
        # 0.8 ms, bench: 9,762 requests of ~120 kB).
        self._base_url = base_url.rstrip("/")
        self._headers = httpx.Headers(
            {
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                "Authorization": f"Bearer {token}",  # httpx masks it in every repr
            }
        )
        self._extensions = {"timeout": timeout.as_dict()}
        self._http = transport or httpx.HTTPTransport(
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            )
        )
        self.requests = 0
        self.retries = 0
        self.requests_by_operation: dict[str, int] = {}
        """HTTP requests sent per operation (retries included)."""
        self._count_lock = threading.Lock()
        self._max_in_flight = max_in_flight
        self._side_by_side: ThreadPoolExecutor | None = None
        self._side_by_side_lock = threading.Lock()

    @property
    def base_path(self) -> str:
        """The path of the base URL (`/v1` of https://host/v1): `next` links may start with it."""
        return base_path(self._base_url)

    def close(self) -> None:
        if self._side_by_side is not None:
            self._side_by_side.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def get_many(
        self,
        operation: str,
        path: str,
        params: Sequence[Mapping[str, str]],
        decoder: PageDecoder,
    ) -> list[Page]:
        """The pages of several requests of one listing (in their order), fetched side by side
        within the in-flight bound and, where they can be, decoded together as one page
        (`decoder.together`). A body that does not decode alone either is fetched again, as
        `get` retries a broken body."""
        with self._side_by_side_lock:
            if self._side_by_side is None:
                self._side_by_side = ThreadPoolExecutor(self._max_in_flight, "incomaker-pages")
            pool = self._side_by_side
        futures = [pool.submit(self.get, operation, path, one, whole_body) for one in params]
        try:
            bodies = [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()
        together = decoder.together(bodies) if len(bodies) > 1 else None
        if together is not None:
            return [together]
        pages = []
        for one, body in zip(params, bodies, strict=True):
            try:
                pages.append(decoder(body))
            except BrokenBody as exc:
                log.info(
                    "%s: broken response body (%s); fetched again", describe(operation, one), exc
                )
                with self._count_lock:
                    self.retries += 1
                pages.append(self.get(operation, path, one, decoder))
        return pages

    def __enter__(self) -> IncomakerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, path: str, params: Mapping[str, str]) -> httpx.Request:
        """GET path (below the base URL; an absolute `next` link as it is) with params."""
        url = httpx.URL(path if "://" in path else self._base_url + path, params=params)
        return httpx.Request("GET", url, headers=self._headers, extensions=self._extensions)

    def get(
        self,
        operation: str,
        path: str,
        params: Mapping[str, str],
        decode: Callable[[bytes], T],
    ) -> T:
        """GET path with params and return decode(body); `decode` raising BrokenBody retries."""
        policy = self.retry
        last_problem = ""
        for attempt in range(policy.max_attempts):
            wait: float | None = None
            with self._count_lock:
                self.requests += 1
                self.requests_by_operation[operation] = (
                    self.requests_by_operation.get(operation, 0) + 1
                )
            if self.rate_limit is not None:
                self.rate_limit.acquire()
            try:
                with self._slots:
                    response = self._http.handle_request(self._request(path, params))
                    try:
                        body = response.read()
                    finally:
                        response.close()
            except httpx.TimeoutException:
                last_problem = "timed out"
            except httpx.TransportError as exc:
                # Dropped connections and bodies cut short of their Content-Length land here.
                last_problem = f"connection problem ({type(exc).__name__})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        result = decode(body)
                    except BrokenBody as exc:
                        last_problem = f"broken response body ({exc})"
                    else:
                        return result
                elif status in (401, 403):
                    raise TokenRejected(
                        f"the Incomaker API rejected the token (HTTP {status}) for "
                        f"{describe(operation, params)}. Check INCOMAKER_API_TOKEN: it must be a "
                        "valid Reporting API token for this account."
                    )
                elif status in RETRY_STATUSES or status >= 500:
                    last_problem = f"HTTP {status}"
                    wait = _retry_after(response)
                    if wait is not None and wait > policy.retry_after_cap:
                        raise ApiUnavailable(
                            f"the Incomaker API asked to wait {wait:.0f} s (HTTP {status}) for "
                            f"{describe(operation, params)}; try the run again later."
                        )
                else:
                    message = _server_message(response)
                    raise RequestRejected(
                        f"the Incomaker API refused {describe(operation, params)} at {path} with "
                        f"HTTP {status}: {message}. If the API changed, correct this operation in "
                        "the catalogue (see README, 'catalogue overrides'), or run "
                        "`incomaker-elt probe` to have it proposed.",
                        status,
                        message,
                    )
            if attempt + 1 == policy.max_attempts:
                break
            delay = max(wait or 0.0, policy.backoff(attempt))
            log.info(
                "%s: %s; retry %d/%d in %.2f s",
                describe(operation, params),
                last_problem,
                attempt + 1,
                policy.max_attempts - 1,
                delay,
            )
            with self._count_lock:
                self.retries += 1
            self._sleep(delay)
        raise ApiUnavailable(
            f"the Incomaker API kept failing for {describe(operation, params)}: {last_problem} "
            f"after {policy.max_attempts} attempts. Check INCOMAKER_BASE_URL and try again later."
        )
