"""The API client in processes of its own, so that fetching and decoding run beside dlt.

An ingestion run does two kinds of Python work: fetching pages and decoding them (httpx, the JSON
reader's set-up), and dlt extracting and writing them. In one process they take turns on one
interpreter lock: replaying `large`, fetching and decoding held the extract for ~31 of its 38 s
(incomaker_elt/ingestion/README.md, "Speed").

`ClientProcesses.get` is `IncomakerClient.get` run in one of a few child processes (`python -m`
this module; `INCOMAKER_FETCH_PROCESSES`, one per core by default): the call goes over a socket
with its decoder (sent once, as its recipe: the operation), one of the child's threads fetches
and decodes, and the decoded page comes back pickled. A call goes to the child with the fewest
calls under way. What the client owns stays as it was, in the children: retries and their
backoff; the bound on requests in flight and the rate limit, split between the children so that
together they hold the run's; the request counts (summed when read); the log lines (forwarded to
the same loggers here); the errors (raised here as the same exceptions).

A child ends when the client is closed, and when this process ends in any way, killed included:
its end of the socket closes, the child's read of it fails, and the child exits without
finishing what it was fetching for nobody.

Only for a client of a real address: a transport given in code (tests, the in-process
stand-in) is a Python object that cannot cross to another process, and stays in this one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from incomaker_elt.contract.settings import NO_API_TOKEN
from incomaker_elt.ingestion.client import (
    DEFAULT_TIMEOUT,
    ApiClient,
    IncomakerClient,
    PageDecoder,
    RetryPolicy,
    base_path,
)
from incomaker_elt.ingestion.errors import IngestionError

if TYPE_CHECKING:
    from incomaker_elt.ingestion.records import Page

log = logging.getLogger(__name__)

T = TypeVar("T")

PROTOCOL = pickle.HIGHEST_PROTOCOL
CLIENT_LOGGER = "incomaker_elt"
"""The child forwards the records of this logger (and those below it) to this process."""


@dataclass(frozen=True)
class ClientSettings:
    """How to build the child's `IncomakerClient`; sent over the socket, never on a command
    line or in the environment, where other users of the machine could read the token."""

    base_url: str
    token: str
    retry: RetryPolicy
    max_in_flight: int
    requests_per_second: float | None
    timeout: httpx.Timeout
    log_level: int

    def __repr__(self) -> str:  # the token never shows in a traceback
        return f"ClientSettings(base_url={self.base_url!r}, max_in_flight={self.max_in_flight})"


@dataclass(frozen=True)
class Counts:
    requests: int
    retries: int
    requests_by_operation: dict[str, int]
    peak_memory_mb: float = 0.0
    """The child's peak resident memory."""

    def __add__(self, other: Counts) -> Counts:
        by_operation = dict(self.requests_by_operation)
        for name, n in other.requests_by_operation.items():
            by_operation[name] = by_operation.get(name, 0) + n
        return Counts(
            self.requests + other.requests,
            self.retries + other.retries,
            by_operation,
            self.peak_memory_mb + other.peak_memory_mb,
        )


class ProcessEnded(IngestionError):
    """The client's process is gone: what it was fetching failed, nothing else was touched."""


def api_client(
    base_url: str,
    token: str,
    *,
    processes: int | None,
    max_in_flight: int,
    requests_per_second: float | None,
    retry: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ApiClient:
    """A client of the API: in `processes` processes of its own, else (None, or a transport
    given in code, which cannot cross to another process) in this one."""
    if processes is None or transport is not None:
        return IncomakerClient(
            base_url,
            token,
            transport=transport,
            retry=retry,
            max_in_flight=max_in_flight,
            requests_per_second=requests_per_second,
        )
    return ClientProcesses(
        base_url,
        token,
        processes=processes,
        retry=retry,
        max_in_flight=max_in_flight,
        requests_per_second=requests_per_second,
    )


class ClientProcesses:
    """`IncomakerClient` in `processes` child processes; thread-safe, and closed like it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        processes: int,
        retry: RetryPolicy | None = None,
        max_in_flight: int = 8,
        requests_per_second: float | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        if not token:
            raise IngestionError(NO_API_TOKEN)
        self.base_path = base_path(base_url)
        n = max(1, min(processes, max_in_flight))
        shares = [max_in_flight // n + (i < max_in_flight % n) for i in range(n)]
        self._children: list[_Child] = []
        try:
            for share in shares:
                rate = None if requests_per_second is None else requests_per_second * share
                self._children.append(
                    _Child(
                        ClientSettings(
                            base_url,
                            token,
                            retry or RetryPolicy(),
                            share,
                            None if rate is None else rate / max_in_flight,
                            timeout,
                            logging.getLogger(CLIENT_LOGGER).getEffectiveLevel(),
                        )
                    )
                )
        except BaseException:
            self.close()
            raise
        self._under_way = [0] * n
        self._lock = threading.Lock()

    def get(
        self, operation: str, path: str, params: Mapping[str, str], decode: Callable[[bytes], T]
    ) -> T:
        """`IncomakerClient.get`, run in the child with the fewest calls under way; `decode`
        must pickle (a records.Decoder, a method of records.OneRecordBodies...)."""
        return self._on_child(lambda child: child.get(operation, path, params, decode))

    def get_many(
        self,
        operation: str,
        path: str,
        params: Sequence[Mapping[str, str]],
        decoder: PageDecoder,
    ) -> list[Page]:
        """`IncomakerClient.get_many`, in one child: the pages fetched and decoded there."""
        return self._on_child(lambda child: child.get_many(operation, path, params, decoder))

    def _on_child(self, call: Callable[[_Child], T]) -> T:
        """`call` on the child with the fewest calls under way."""
        with self._lock:
            index = min(range(len(self._children)), key=self._under_way.__getitem__)
            self._under_way[index] += 1
        try:
            return call(self._children[index])
        finally:
            with self._lock:
                self._under_way[index] -= 1

    def counts(self) -> Counts:
        """The requests so far (retries included), per operation, and the children's peak
        memory."""
        total = Counts(0, 0, {})
        for child in self._children:
            total = total + child.counts()
        return total

    @property
    def requests(self) -> int:
        return self.counts().requests

    @property
    def retries(self) -> int:
        return self.counts().retries

    @property
    def requests_by_operation(self) -> dict[str, int]:
        return self.counts().requests_by_operation

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    def close(self) -> None:
        for child in self._children:
            child.close()

    def __enter__(self) -> ClientProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Child:
    """One child process running an `IncomakerClient`, and the calls under way in it."""

    def __init__(self, settings: ClientSettings) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=_child_environment(),
            )
        finally:
            theirs.close()
        self._connection = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._calls: dict[int, Future[Any]] = {}
        self._ids = itertools.count()
        self._decoders: dict[Callable[[bytes], Any], int] = {}
        self._ended: ProcessEnded | None = None
        self._closed = False
        self._last_counts = Counts(0, 0, {})
        self._connection.send_bytes(pickle.dumps(("open", settings), PROTOCOL))
        self._reader = threading.Thread(
            target=self._read, name="incomaker-client-process", daemon=True
        )
        self._reader.start()

    # ------------------------------------------------------------------ the client's calls

    def get(
        self, operation: str, path: str, params: Mapping[str, str], decode: Callable[[bytes], T]
    ) -> T:
        return self._call(lambda call: ("get", call, operation, path, dict(params)), decode)

    def get_many(
        self,
        operation: str,
        path: str,
        params: Sequence[Mapping[str, str]],
        decoder: PageDecoder,
    ) -> list[Page]:
        many = [dict(one) for one in params]
        return self._call(lambda call: ("many", call, operation, path, many), decoder)

    def counts(self) -> Counts:
        if not self._closed and self._ended is None:
            self._last_counts = self._call(lambda call: ("counts", call))
        return self._last_counts

    def _call(
        self,
        message: Callable[[int], tuple[Any, ...]],
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        future: Future[Any] = Future()
        with self._send_lock:
            if self._ended is not None:
                raise self._ended
            if self._closed:
                raise IngestionError("the API client was used after it was closed")
            call = next(self._ids)
            key, recipe = None, None
            if decode is not None:
                key = self._decoders.get(decode)
                if key is None:
                    key, recipe = len(self._decoders), decode
            payload = _dumps((*message(call), key, recipe), decode)
            if recipe is not None:
                self._decoders[recipe] = key
            self._calls[call] = future
            with contextlib.suppress(OSError):  # the child is gone: the reader says why
                self._connection.send_bytes(payload)
        return future.result()

    # ------------------------------------------------------------------ what comes back

    def _read(self) -> None:
        try:
            while True:
                kind, *rest = pickle.loads(self._connection.recv_bytes())
                if kind == "log":
                    name, level, text = rest
                    logging.getLogger(name).log(level, "%s", text)
                    continue
                call, outcome = rest
                future = self._calls.pop(call, None)
                if future is None:
                    continue
                if kind == "error":
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        except (EOFError, OSError):
            pass
        except Exception as exc:  # an answer that does not unpickle: the child is not ours
            log.error("the API client's process answered what this process cannot read: %r", exc)
        self._end()

    def _end(self) -> None:
        """Every call still waiting fails, saying why; later calls fail the same way."""
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        with self._send_lock:
            if self._closed:
                ended = ProcessEnded("the API client was closed while a request was under way")
            else:
                ended = ProcessEnded(
                    "the process fetching from the API ended unexpectedly "
                    f"({_exit_description(code)}): the operations it was fetching failed, and "
                    "nothing of them was loaded; what was loaded before stays. Run again to "
                    "fetch them."
                )
            self._ended = ended
            calls, self._calls = self._calls, {}
        for future in calls.values():
            future.set_exception(ended)

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """Counts kept for reading after, then the child told to exit and waited for."""
        if self._closed:
            return
        if self._ended is None:
            with contextlib.suppress(IngestionError):
                self.counts()
        with self._send_lock:
            self._closed = True
            with contextlib.suppress(OSError):
                self._connection.send_bytes(pickle.dumps(("close",), PROTOCOL))
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=10)
        self._connection.close()

    @property
    def pid(self) -> int:
        return self._process.pid


def _dumps(message: tuple[Any, ...], decode: Callable[[bytes], Any] | None) -> bytes:
    try:
        return pickle.dumps(message, PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"the decoder {decode!r} cannot be sent to the API client's process ({exc}): "
            "decoders come from incomaker_elt.ingestion.records (a Decoder, or a method of "
            "OneRecordBodies)"
        ) from exc


def _exit_description(code: int | None) -> str:
    if code is None:
        return "still running, but its socket closed"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        killed = " (SIGKILL: out of memory?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{killed}"
    return f"exit code {code}"


def _child_environment() -> dict[str, str]:
    """This environment, with this process's import path: the child must import what the
    decoders sent to it name (this package, wherever it was imported from, and any other)."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *(os.path.abspath(entry) for entry in sys.path)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


# ---------------------------------------------------------------------------- the child


class _Forward(logging.Handler):
    """The child's log records, sent to the parent's logger of the same name."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError):
            self._send(pickle.dumps(("log", record.name, record.levelno, record.getMessage())))


def _serve(connection: Connection) -> None:
    kind, settings = pickle.loads(connection.recv_bytes())
    assert kind == "open" and isinstance(settings, ClientSettings)
    send_lock = threading.Lock()

    def send(payload: bytes) -> None:
        with send_lock:
            connection.send_bytes(payload)

    logger = logging.getLogger(CLIENT_LOGGER)
    logger.setLevel(settings.log_level)
    logger.addHandler(_Forward(send))
    logger.propagate = False
    client = IncomakerClient(
        settings.base_url,
        settings.token,
        retry=settings.retry,
        max_in_flight=settings.max_in_flight,
        requests_per_second=settings.requests_per_second,
        timeout=settings.timeout,
    )
    decoders: dict[int, Callable[[bytes], Any]] = {}

    def answer(call: int, work: Callable[[], Any]) -> None:
        try:
            payload = pickle.dumps(("result", call, work()), PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            payload = _error(call, exc)
        with contextlib.suppress(OSError):  # the parent is gone; the main loop exits too
            send(payload)

    # The client's own bound keeps `max_in_flight` requests on the wire; the threads beyond it
    # wait there, so that no call waits behind another's decoding.
    with ThreadPoolExecutor(2 * settings.max_in_flight + 2, "incomaker-fetch") as pool:
        while True:
            try:
                kind, *rest = pickle.loads(connection.recv_bytes())
            except (EOFError, OSError):
                break
            if kind in ("get", "many"):
                call, operation, path, params, key, recipe = rest
                if recipe is not None:
                    decoders[key] = recipe
                get = client.get if kind == "get" else client.get_many
                pool.submit(
                    answer,
                    call,
                    lambda g=get, o=operation, p=path, q=params, d=decoders[key]: g(o, p, q, d),
                )
            elif kind == "counts":
                call = rest[0]
                pool.submit(
                    answer,
                    call,
                    lambda: Counts(
                        client.requests,
                        client.retries,
                        dict(client.requests_by_operation),
                        _peak_memory_mb(),
                    ),
                )
            else:  # "close"
                break
        # Nobody waits for what is still under way: leave without finishing it.
        os._exit(0)


def _peak_memory_mb() -> float:
    """This process's peak resident memory: VmHWM, as ru_maxrss still holds the parent's peak
    from before the exec on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _error(call: int, exc: BaseException) -> bytes:
    """The exception as it was raised, else (one that does not pickle) its type and words;
    a failure that is not the API's carries the child's traceback as a note."""
    if not isinstance(exc, IngestionError):
        exc.add_note("in the API client's process:\n" + "".join(traceback.format_exception(exc)))
    try:
        return pickle.dumps(("error", call, exc), PROTOCOL)
    except Exception:  # noqa: BLE001
        words = f"{type(exc).__name__}: {exc}"
        return pickle.dumps(("error", call, IngestionError(words)), PROTOCOL)


def main(argv: list[str]) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and closes this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(Connection(int(argv[1])))
    os._exit(0)


if __name__ == "__main__":
    # Run as the module itself, not as __main__: the classes it pickles are the parent's.
    from incomaker_elt.ingestion import client_process

    client_process.main(sys.argv)
