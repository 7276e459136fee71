"""The HTTP client for the Incomaker Reporting v1 API.

One request = one call of `IncomakerClient.get`, which owns every failure policy:
- 429, 5xx, timeouts, dropped connections and bodies that do not decode (truncated JSON) are
  retried a bounded number of times with exponential backoff and full jitter, waiting at least
  what the server asks for in Retry-After;
- 401/403 fail at once: retrying a rejected token only locks the account;
- any other 4xx fails at once with the operation, its parameters and the server's message.

The token travels only in the Authorization header. No message, log line or exception built here
contains it, and the header is marked sensitive so httpx never echoes it either.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import orjson

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=300.0)
USER_AGENT = "incomaker-elt (+https://github.com/incomaker-elt)"


class IngestionError(RuntimeError):
    """A failure the user must act on; the message names the operation and what to do."""


class TokenRejected(IngestionError):
    pass


class RequestRejected(IngestionError):
    pass


class ApiUnavailable(IngestionError):
    pass


class BrokenBody(ValueError):
    """A 2xx body that does not decode: truncated or malformed. Worth another attempt."""


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


class IncomakerClient:
    """Thread-safe: the workers of one run share it, and `max_in_flight` bounds their requests."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_in_flight: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise IngestionError(
                "no API token: set INCOMAKER_API_TOKEN (or api_token under [sources.incomaker] "
                "in .dlt/secrets.toml)"
            )
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(max_in_flight)
        headers = httpx.Headers({"Accept": "application/json", "User-Agent": USER_AGENT})
        self._auth = {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
        )
        self.requests = 0
        self.retries = 0
        self._count_lock = threading.Lock()

    @property
    def base_path(self) -> str:
        """The path of the base URL (`/v1` of https://host/v1): `next` links may start with it."""
        return self._http.base_url.path.rstrip("/")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IncomakerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            try:
                with self._slots:
                    response = self._http.get(path, params=params, headers=self._auth)
                    body = response.content
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
                    raise RequestRejected(
                        f"the Incomaker API refused {describe(operation, params)} at {path} with "
                        f"HTTP {status}: {_server_message(response)}. If the API changed, correct "
                        "this operation in the catalogue (see README, 'catalogue overrides')."
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
