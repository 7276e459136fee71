"""Polite to a real server: the requests-per-second cap beside the in-flight bound, its setting,
and the requests counted per operation. Time is a fake clock: nothing here waits for real."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import httpx
import pytest

from incomaker_elt.contract.settings import (
    DEFAULT_REQUESTS_PER_SECOND,
    ConfigurationError,
    load_settings,
)
from incomaker_elt.ingestion.cli import _table
from incomaker_elt.ingestion.client import IncomakerClient, RateLimit, RetryPolicy
from incomaker_elt.ingestion.pipeline import LoadSummary


class FakeClock:
    """Time that moves only when someone sleeps: a sleeper wakes at the moment it read plus
    its wait, and the clock shows the latest wake-up so far (threads sleep side by side)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()
        self._read = threading.local()

    def clock(self) -> float:
        with self._lock:
            self._read.at = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now = max(self.now, getattr(self._read, "at", self.now) + seconds)


def test_n_requests_at_r_per_second_take_n_over_r_seconds() -> None:
    fake = FakeClock()
    limit = RateLimit(10, clock=fake.clock, sleep=fake.sleep)
    waits = [limit.acquire() for _ in range(50)]
    assert waits[0] == 0.0
    assert fake.now == pytest.approx(49 / 10)
    assert all(w == pytest.approx(0.1) for w in waits[1:])


def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    fake = FakeClock()
    limit = RateLimit(4, burst=3, clock=fake.clock, sleep=fake.sleep)
    waits = [limit.acquire() for _ in range(11)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert fake.now == pytest.approx((11 - 3) / 4)


def test_an_idle_bucket_refills_up_to_its_burst_only() -> None:
    fake = FakeClock()
    limit = RateLimit(2, burst=2, clock=fake.clock, sleep=fake.sleep)
    for _ in range(2):
        limit.acquire()
    fake.now += 60.0  # a minute without requests: still only two go at once
    assert [limit.acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (5, 0)])
def test_a_rate_limit_needs_a_positive_rate_and_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit(rate, burst=burst)


class Server(httpx.BaseTransport):
    """Answers after a moment of real time, and notes how many requests were in flight at
    once and the fake time each one started."""

    def __init__(self, fake: FakeClock) -> None:
        self.fake = fake
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[float] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.started.append(self.fake.now)
        time.sleep(0.002)  # long enough for requests to overlap
        with self._lock:
            self.in_flight -= 1
        return httpx.Response(200, content=b"{}")


def test_concurrency_and_rate_hold_together() -> None:
    fake, rate, requests, bound = FakeClock(), 20.0, 60, 3
    server = Server(fake)
    client = IncomakerClient(
        "http://api.test",
        "token",
        transport=server,
        max_in_flight=bound,
        rate_limit=RateLimit(rate, clock=fake.clock, sleep=fake.sleep),
    )
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.get("orders", "/orders", {"i": str(i)}, len), range(60)))
    assert 1 < server.most_in_flight <= bound
    # The k-th request to start did not start before k/rate: the rate held across 8 threads.
    for k, started in enumerate(sorted(server.started)):
        assert started >= k / rate - 1e-9
    assert fake.now == pytest.approx((requests - 1) / rate)
    assert client.requests_by_operation == {"orders": requests}


def test_requests_are_counted_per_operation_retries_included() -> None:
    answers = iter([503, 200, 200, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), content=b"{}")

    client = IncomakerClient(
        "http://api.test",
        "token",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(max_attempts=3, backoff_base=0.0, backoff_cap=0.0),
        sleep=lambda _: None,
    )
    client.get("orders", "/orders", {}, len)
    client.get("orders", "/orders", {}, len)
    client.get("senders", "/campaigns/senders", {}, len)
    assert client.requests_by_operation == {"orders": 3, "senders": 1}
    assert client.requests == 4 and client.retries == 1
    assert client.rate_limit is None  # no cap unless one is given


def test_the_ingest_table_shows_requests_per_operation() -> None:
    summary = LoadSummary(
        start=date(2025, 1, 1),
        end=date(2026, 6, 30),
        operations={},
        rows_loaded={"orders": 3_500, "orders__items": 9_000},
        table_rows={"orders": 3_500, "orders__items": 9_000},
        requests=5,
        requests_by_operation={"orders": 4, "senders": 1},
    )
    lines = _table(summary)
    assert lines[0].split()[-1] == "requests"
    assert lines[2].split() == ["orders", "3,500", "3,500", "4"]
    assert lines[3].split() == ["orders__items", "9,000", "9,000"]


# ----------------------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({"INCOMAKER_API_TOKEN": "t", "INCOMAKER_BASE_URL": "https://api.example.com/v1"}, 10.0),
        ({"INCOMAKER_BASE_URL": "https://api.example.com/v1"}, None),  # no token: the stand-in
        ({"INCOMAKER_API_TOKEN": "t", "INCOMAKER_BASE_URL": "http://127.0.0.1:8765"}, None),
        ({"INCOMAKER_API_TOKEN": "t", "INCOMAKER_BASE_URL": "http://localhost:8765"}, None),
        ({"INCOMAKER_API_TOKEN": "t", "INCOMAKER_REQUESTS_PER_SECOND": "2.5"}, 2.5),
        ({"INCOMAKER_REQUESTS_PER_SECOND": "4"}, 4.0),
        ({"INCOMAKER_API_TOKEN": "t", "INCOMAKER_REQUESTS_PER_SECOND": "0"}, None),
    ],
)
def test_requests_per_second_setting(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: float | None
) -> None:
    for name in ("INCOMAKER_API_TOKEN", "INCOMAKER_BASE_URL", "INCOMAKER_REQUESTS_PER_SECOND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert load_settings().requests_per_second == expected
    assert DEFAULT_REQUESTS_PER_SECOND == 10.0


@pytest.mark.parametrize("value", ["fast", "-1", "nan", "inf"])
def test_a_wrong_rate_says_what_to_set(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INCOMAKER_REQUESTS_PER_SECOND", value)
    with pytest.raises(ConfigurationError, match="INCOMAKER_REQUESTS_PER_SECOND"):
        load_settings()
