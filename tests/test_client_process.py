"""The API client in processes of its own (incomaker_elt/ingestion/client_process.py), over real
sockets: the same pages and the same errors as the client in this process, the run's bounds
held across its processes, and no process left behind however the run ends."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from incomaker_elt.contract.catalogue import default_catalogue
from incomaker_elt.ingestion.client import IncomakerClient, RetryPolicy
from incomaker_elt.ingestion.client_process import ClientProcesses, ProcessEnded
from incomaker_elt.ingestion.errors import ApiUnavailable, RequestRejected, TokenRejected
from incomaker_elt.ingestion.records import BrokenBody, decoder, one_record_bodies
from incomaker_elt.standin import StandIn

TOKEN = "standin-token"
CATALOGUE = default_catalogue()
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.02)


@pytest.fixture(scope="module")
def served(small_world) -> Iterator[str]:
    with StandIn(small_world, token=TOKEN).serve() as base_url:
        yield base_url


class Scripted(BaseHTTPRequestHandler):
    """/slow waits `delay` s; /unavailable answers 503; /gone 404 with a message; anything else
    a one-record body. Counts the requests under way at once."""

    delay = 0.2
    lock = threading.Lock()
    under_way = 0
    most = 0
    started: list[float] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        cls = type(self)
        with cls.lock:
            cls.under_way += 1
            cls.most = max(cls.most, cls.under_way)
            cls.started.append(time.monotonic())
        try:
            if self.path.startswith("/slow"):
                time.sleep(cls.delay)
        finally:
            # Before the answer leaves: a call the client has back is no longer counted, even
            # while this thread has not yet been scheduled again.
            with cls.lock:
                cls.under_way -= 1
        status, body = 200, b'{"a": 1}'
        if self.path.startswith("/unavailable"):
            status, body = 503, b"{}"
        elif self.path.startswith("/gone"):
            status, body = 404, b'{"error": "no such thing", "parameter": "id"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator[str]:
    Scripted.under_way = Scripted.most = 0
    Scripted.started = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def keep_body(body: bytes) -> bytes:
    return body


def test_pages_come_back_as_the_client_in_this_process_decodes_them(served):
    """Arrow pages, dict pages (nested lists) and one-record bodies, from two processes."""
    orders, detail = CATALOGUE.get("orders"), CATALOGUE.get("order_detail")
    products, product = CATALOGUE.get("products"), CATALOGUE.get("product_detail")
    one_record = one_record_bodies(product)
    assert one_record is not None
    window = {"dateFrom": "2026-01-01", "dateTo": "2026-06-30"}
    listing = (orders.name, orders.url_path(), {**window, **orders.paging.params(0, 100)})
    with IncomakerClient(served, TOKEN) as here:
        first = here.get(*listing, decoder(orders)).records
        product_ids = here.get(
            products.name, products.url_path(), products.paging.params(0, 2), decoder(products)
        ).records.column("product_id")
        calls = [
            (*listing, decoder(orders)),
            (*listing, decoder(orders)),
            (
                detail.name,
                detail.url_path(orderId=str(first.column("order_id")[0])),
                {},
                decoder(detail),
            ),
            *(
                (product.name, product.url_path(productId=str(id_)), {}, one_record.accept)
                for id_ in product_ids
            ),
        ]
        expected = [here.get(*call) for call in calls]
    with ClientProcesses(served, TOKEN, processes=2, max_in_flight=4) as there:
        assert len(set(there.pids)) == 2 and os.getpid() not in there.pids
        got = [there.get(*call) for call in calls]
        counts = there.counts()
    assert got == expected
    assert got[0].rows == 100 and isinstance(got[2].records, list)  # Arrow, then dicts
    assert all(isinstance(body, bytes) for body in got[3:])
    assert counts.requests == len(calls) and counts.retries == 0
    assert counts.requests_by_operation == {"orders": 2, detail.name: 1, product.name: 2}
    assert there.requests == len(calls), "the counts stay readable after closing"


def test_the_apis_refusals_arrive_as_the_same_errors_with_their_details(scripted, caplog):
    caplog.set_level(logging.INFO, logger="incomaker_elt")  # the children take it as they start
    with ClientProcesses(scripted, TOKEN, processes=2, retry=FAST_RETRY) as client:
        with pytest.raises(RequestRejected) as refused:
            client.get("things", "/gone", {"id": "7"}, keep_body)
        assert refused.value.status == 404
        assert refused.value.server_message == "no such thing (parameter id)"
        assert "operation 'things' (id=7)" in str(refused.value)

        with pytest.raises(ApiUnavailable, match="HTTP 503 after 3 attempts"):
            client.get("things", "/unavailable", {}, keep_body)
        retries = [r for r in caplog.records if "retry" in r.getMessage()]
        assert len(retries) == 2, "the child's retry lines reach this process's logger"
        assert retries[0].name == "incomaker_elt.ingestion.client"
        assert client.retries == 2 and client.requests == 4
        # The client is still usable after errors.
        assert client.get("things", "/ok", {}, keep_body) == b'{"a": 1}'


def test_a_wrong_token_is_rejected_by_the_child_as_by_the_client(served):
    op = CATALOGUE.get("segments")
    with (
        ClientProcesses(served, "not-the-token", processes=1) as client,
        pytest.raises(TokenRejected, match="rejected the token") as rejected,
    ):
        client.get(op.name, op.url_path(), op.paging.params(0, 1), decoder(op))
    assert "not-the-token" not in str(rejected.value)


def broken(body: bytes) -> bytes:
    raise BrokenBody("cut short")


def failing(body: bytes) -> bytes:
    return body.decode("ascii").missing  # type: ignore[attr-defined]


def test_a_failure_in_the_child_names_where_it_happened_and_a_bad_decoder_is_refused(scripted):
    with ClientProcesses(scripted, TOKEN, processes=1, retry=FAST_RETRY) as client:
        with pytest.raises(ApiUnavailable, match="broken response body"):
            client.get("things", "/ok", {}, broken)
        with pytest.raises(AttributeError) as failed:
            client.get("things", "/ok", {}, failing)
        assert "in the API client's process" in "".join(failed.value.__notes__)
        assert "failing" in "".join(failed.value.__notes__)
        with pytest.raises(TypeError, match="cannot be sent to the API client's process"):
            client.get("things", "/ok", {}, lambda body: body)
        assert client.get("things", "/ok", {}, keep_body) == b'{"a": 1}'


def all_at_once(client: ClientProcesses, path: str, n: int) -> None:
    """`n` calls of `path`, each from a thread of its own, all started before any is waited for."""
    threads = [
        threading.Thread(target=client.get, args=("calls", path, {}, keep_body)) for _ in range(n)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_the_bound_on_requests_in_flight_holds_across_the_processes(scripted):
    with ClientProcesses(scripted, TOKEN, processes=2, max_in_flight=3) as client:
        all_at_once(client, "/slow", 12)
        assert client.requests == 12
    assert Scripted.most == 3, "three at once: the bound split 2 + 1, and both used"


def test_the_rate_limit_holds_across_the_processes(scripted):
    with ClientProcesses(
        scripted, TOKEN, processes=2, max_in_flight=4, requests_per_second=20
    ) as client:
        all_at_once(client, "/ok", 21)
    span = max(Scripted.started) - min(Scripted.started)
    # 20 per second together (10 in each process): 21 requests need about a second.
    assert span >= 0.85, f"21 requests in {span:.2f} s: faster than 20 per second"


def test_a_killed_child_fails_the_calls_under_way_saying_so(scripted):
    Scripted.delay = 5.0
    try:
        with ClientProcesses(scripted, TOKEN, processes=1) as client:
            outcome: list[BaseException] = []

            def call() -> None:
                try:
                    client.get("slow", "/slow", {}, keep_body)
                except BaseException as exc:  # noqa: BLE001
                    outcome.append(exc)

            waiting = threading.Thread(target=call)
            waiting.start()
            while Scripted.under_way == 0:
                time.sleep(0.01)
            os.kill(client.pids[0], signal.SIGKILL)
            waiting.join(timeout=10)
            assert not waiting.is_alive()
            assert isinstance(outcome[0], ProcessEnded)
            assert "killed by SIGKILL" in str(outcome[0]) and "Run again" in str(outcome[0])
            with pytest.raises(ProcessEnded):
                client.get("things", "/ok", {}, keep_body)
    finally:
        Scripted.delay = 0.2


PARENT = textwrap.dedent(
    """
    import sys
    from incomaker_elt.ingestion.client_process import ClientProcesses
    from tests.test_client_process import keep_body
    client = ClientProcesses(sys.argv[1], "t", processes=2, max_in_flight=2)
    print(*client.pids, flush=True)
    client.get("slow", "/slow", {}, keep_body)
    """
)


def test_killing_the_run_ends_its_fetching_processes(scripted):
    Scripted.delay = 30.0
    try:
        root = Path(__file__).resolve().parents[1]
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, scripted],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        deadline = time.monotonic() + 30
        while Scripted.under_way == 0:
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.01)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "a fetching process outlived its run"
            time.sleep(0.05)
    finally:
        Scripted.delay = 0.2


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie waiting for init counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
