"""Benchmark: the ingestion of the `large` stand-in world over loopback HTTP, against a floor.

    .venv/bin/python bench/ingest.py [--scale large] [--all] [--concurrency 8] [--catalogue FILE]

1. Starts `incomaker-elt simulate --scale large` in its own process (its CPU is not ours).
2. Runs `run_ingestion` into a fresh DuckDB file under bench/out/ ("live"), with its API client
   in processes of its own as every run has it (incomaker_elt/ingestion/client_process.py):
   wall time, rows, rows/s, the peak memory of this process and of the client's, the CPU seconds
   of both and of the stand-in.
3. Fetches the identical bodies again and stores them as files, with an index of the request
   each one answers (bench/replay.py's `answers.json`).
4. Runs the same ingestion into another fresh DuckDB file against bench/replay.py, which serves
   those bodies from memory ("replay"). The stand-in renders every page on request, ~4 ms of CPU
   a page at `large`, on the same two cores as the pipeline; a real Incomaker server does not
   share our cores. The replayed run is the pipeline's own speed, and the target is judged on
   it; the live figure is printed beside it. Both runs must load the same rows. Then once more
   with the client in this process ("replay, one process"), the way runs fetched before: the
   ratio of the two, measured minutes apart, is what the client's processes bring.
5. The floor: times DuckDB's own `read_json` loading the stored bodies into tables (and its CPU
   seconds). Prints pipeline rows/s over floor rows/s, and the load average around each
   measure: on 2 shared cores, other work slows both, the multi-threaded floor more.

By default the per-record details of large parents (a detail per order, contact, cart, product:
`changed_only` in the catalogue) are left out: a first backfill of those is one request per record
(a million for the orders of `large`), bound by the API, not by the pipeline; nightly runs ask
only for the records that changed. `--all` includes them.

Pages are asked for and read in the catalogue's paging dialect (incomaker_elt/contract/paging.py):
the vendor's
offset/limit by default; `--catalogue FILE` (an override file such as `defaults: {paging: page}`)
makes the stand-in speak another one and the pipeline read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay import ANSWERS  # noqa: E402

from incomaker_elt.contract.catalogue import Catalogue, Operation, default_catalogue, load_catalogue  # noqa: E402
from incomaker_elt.contract.settings import Settings, load_settings  # noqa: E402
from incomaker_elt.ingestion.client import ApiClient, IncomakerClient  # noqa: E402
from incomaker_elt.ingestion.client_process import ClientProcesses  # noqa: E402
from incomaker_elt.ingestion.pipeline import LoadSummary, make_pipeline, run_ingestion  # noqa: E402
from incomaker_elt.ingestion.raw_columns import has_nested_lists  # noqa: E402

TOKEN = "bench-token"
TODAY = date(2026, 6, 30)
OUT = ROOT / "bench" / "out"


class Recorder:
    """An API client that notes the address of every answered call, to fetch the same bodies
    for the floor; the pipeline's own client does the rest.

    Only the address: which operation answered it is worked out after the run (`floor_urls`),
    so that the bench's bookkeeping costs the pipeline's threads next to nothing."""

    def __init__(self, client: ApiClient, base_url: str) -> None:
        self.client = client
        self.base_path = client.base_path
        self.urls: list[httpx.URL] = []
        self._base_url = base_url.rstrip("/")
        self._lock = threading.Lock()

    def get(self, operation: str, path: str, params: Mapping[str, str], decode: Any) -> Any:
        answer = self.client.get(operation, path, params, decode)
        with self._lock:
            self.urls.append(httpx.URL(self._base_url + path, params=params))
        return answer

    def get_many(
        self, operation: str, path: str, params: Sequence[Mapping[str, str]], decoder: Any
    ) -> Any:
        pages = self.client.get_many(operation, path, params, decoder)
        with self._lock:
            self.urls += [httpx.URL(self._base_url + path, params=one) for one in params]
        return pages

    requests = property(lambda self: self.client.requests)
    retries = property(lambda self: self.client.retries)
    requests_by_operation = property(lambda self: self.client.requests_by_operation)

    def close(self) -> None:
        self.client.close()


def floor_urls(urls: list[httpx.URL], catalogue: Catalogue) -> list[str]:
    """The recorded addresses but the token check before the run (a page of one record, in the
    operation's paging dialect)."""
    routes = route_table(catalogue)
    kept = []
    for url in urls:
        op = operation_at(routes, url.path)
        if not (op.is_paged and url.params.get(op.paging.size_param) == "1"):
            kept.append(str(url))
    return kept


def start_standin(scale: str, catalogue_file: Path | None) -> tuple[subprocess.Popen, str]:
    command = [
        str(ROOT / ".venv" / "bin" / "incomaker-elt"),
        "simulate",
        "--scale",
        scale,
        "--port",
        "0",
        "--token",
        TOKEN,
        "--today",
        TODAY.isoformat(),
        *(["--catalogue", str(catalogue_file)] if catalogue_file else []),
    ]
    return start_server(command, "stand-in", "run `incomaker-elt simulate` to see why")


def start_replay(folder: Path) -> tuple[subprocess.Popen, str]:
    """bench/replay.py serving the recorded bodies, in its own process."""
    command = [sys.executable, str(ROOT / "bench" / "replay.py"), str(folder)]
    return start_server(command, "replay", "run bench/replay.py by hand to see why")


def start_server(command: list[str], label: str, hint: str) -> tuple[subprocess.Popen, str]:
    """`command` in its own process, until it prints `serving <address>`: the process and the
    address. Its lines are shown with `label`."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        print(f"  [{label}] {line.rstrip()}")
        found = re.search(r"serving (\S+)", line)
        if found:
            return process, found.group(1)
    raise SystemExit(f"the {label} server did not start; {hint}")


@dataclasses.dataclass
class TimedRun:
    """One timed ingestion: what it loaded, what it asked for, and what it cost."""

    summary: LoadSummary
    urls: list[httpx.URL]
    wall: float
    cpu: float
    """This process's and the API client's processes' CPU seconds."""
    client_cpu: float
    client_peak_mb: float
    """The client's processes' peak memory, added up (0: the client ran in this process)."""
    server_cpu: float | None
    load: tuple[float, float]
    steps: dict[str, float]

    @property
    def rows(self) -> int:
        return sum(n for t, n in self.summary.rows_loaded.items() if "__" not in t)

    def figures(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.wall, 2),
            "rows_per_second": round(self.rows / self.wall),
            "dlt_steps_seconds": self.steps,
            "pipeline_cpu_seconds": round(self.cpu, 1),
            "client_processes_cpu_seconds": round(self.client_cpu, 1),
            "client_processes_peak_memory_mb": round(self.client_peak_mb),
            "server_cpu_seconds": None if self.server_cpu is None else round(self.server_cpu, 1),
            "load_average": list(self.load),
        }


def timed_ingestion(
    settings: Settings,
    catalogue: Catalogue,
    left_out: list[str],
    server_pid: int,
    report: Callable[[str], None] | None,
    *,
    client_processes: bool = True,
) -> TimedRun:
    """One `run_ingestion` of every selected operation into settings' warehouse, timed, with
    the CPU seconds of this process and its client's, and the server's. `client_processes`:
    the API client as every run has it, else in this process (as runs fetched before)."""
    assert settings.base_url and settings.api_token
    client: ApiClient
    if client_processes:
        client = ClientProcesses(
            settings.base_url,
            settings.api_token,
            processes=settings.fetch_processes,
            max_in_flight=settings.ingest_concurrency,
        )
    else:
        client = IncomakerClient(
            settings.base_url, settings.api_token, max_in_flight=settings.ingest_concurrency
        )
    recorder = Recorder(client, settings.base_url)
    load_before = load_average()
    server_before = cpu_seconds_of(server_pid)
    cpu_before, children_before = own_cpu_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    summary = run_ingestion(
        settings,
        exclude=left_out,
        start=settings.partitions_start,
        end=TODAY,
        client=recorder,
        report=report,
        catalogue=catalogue,
    )
    wall = time.perf_counter() - started
    # The client's processes have ended and been waited for: theirs are the children's seconds.
    client_cpu = children_cpu_seconds() - children_before
    cpu = own_cpu_seconds() - cpu_before + client_cpu
    client_peak = client.counts().peak_memory_mb if isinstance(client, ClientProcesses) else 0.0
    server_after = cpu_seconds_of(server_pid)
    server_cpu = (
        server_after - server_before
        if server_after is not None and server_before is not None
        else None
    )
    trace = make_pipeline(settings).last_trace
    steps = {
        step.step: round((step.finished_at - step.started_at).total_seconds(), 1)
        for step in (trace.steps if trace else [])
    }
    return TimedRun(
        summary,
        recorder.urls,
        wall,
        cpu,
        client_cpu,
        client_peak,
        server_cpu,
        (load_before, load_average()),
        steps,
    )


def cpu_seconds_of(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    """The machine's 1-minute load average: other work sharing the cores slows both measures."""
    return round(os.getloadavg()[0], 1)


def route_table(catalogue: Catalogue) -> list[tuple[re.Pattern[str], Operation]]:
    routes = [
        (re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"[^/]+", re.escape(op.path)) + "$"), op)
        for op in catalogue
    ]
    routes.sort(key=lambda r: (len(r[1].path_params), -len(r[1].path)))
    return routes


def operation_at(routes: list[tuple[re.Pattern[str], Operation]], path: str) -> Operation:
    """The operation answering a request path."""
    return next(op for pattern, op in routes if pattern.match(path))


def save_bodies(
    urls: list[httpx.URL], floor: set[str], folder: Path, catalogue: Catalogue
) -> dict[str, Path]:
    """The bodies the pipeline received, one file each, in one folder per operation, and the
    index bench/replay.py serves them by (every answer, the token check's too). Returns the
    folders of the floor's bodies (`floor`: the addresses read_json loads)."""
    routes = route_table(catalogue)
    folders: dict[str, Path] = {}
    counters: dict[str, int] = {}
    answers: dict[str, str] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as client:
        for url in urls:
            response = client.get(url)
            response.raise_for_status()
            op = operation_at(routes, url.path)
            name = op.name if str(url) in floor else "_not_in_floor"
            target = folder / name
            if name != "_not_in_floor":
                folders[name] = target
            target.mkdir(parents=True, exist_ok=True)
            n = counters[name] = counters.get(name, 0) + 1
            (target / f"{n:07d}.json").write_bytes(response.content)
            answers[url.raw_path.decode()] = f"{name}/{n:07d}.json"
    (folder / ANSWERS).write_text(json.dumps(answers))
    return folders


def floor(folders: dict[str, Path], database: Path, catalogue: Catalogue) -> tuple[float, int]:
    """DuckDB's read_json loading the same bodies: the time and the records it loaded."""
    rows = 0
    with duckdb.connect(str(database)) as con:
        started = time.perf_counter()
        for name, folder in folders.items():
            op = catalogue.get(name)
            files = f"'{folder}/*.json'"
            if op.records_path == "$":
                select = f"select * from read_json({files}, union_by_name = true)"
            else:  # where the paging dialect keeps the records: a named array, content, a.b
                path = ".".join(f'"{part}"' for part in op.records_path.split("."))
                select = (
                    f"select unnest({path}, recursive := true) "
                    f"from read_json({files}, union_by_name = true)"
                )
            con.execute(f'create table "{name}" as {select}')
            rows += con.execute(f'select count(*) from "{name}"').fetchone()[0]
        seconds = time.perf_counter() - started
    return seconds, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="large")
    parser.add_argument("--all", action="store_true", help="include per-record detail backfills")
    parser.add_argument(
        "--top-level",
        action="store_true",
        help="only operations without a parent: the big flat listings, no per-id requests",
    )
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument(
        "--catalogue",
        type=Path,
        default=None,
        metavar="FILE",
        help="a catalogue override file: the dialect the stand-in speaks and the pipeline reads",
    )
    args = parser.parse_args()

    catalogue = load_catalogue(args.catalogue) if args.catalogue else default_catalogue()
    left_out = [
        op.name
        for op in catalogue
        if op.parent and (args.top_level or (op.parent.changed_only and not args.all))
    ]
    selected = [op.name for op in catalogue if op.name not in left_out]
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)

    print(f"starting the stand-in ({args.scale}) in its own process ...")
    standin, base_url = start_standin(args.scale, args.catalogue)
    try:
        settings = dataclasses.replace(
            load_settings(),
            warehouse_path=OUT / "warehouse" / "incomaker.duckdb",
            base_url=base_url,
            api_token=TOKEN,
            dlt_destination=None,
        )
        if args.concurrency:
            settings = dataclasses.replace(settings, ingest_concurrency=args.concurrency)
        print(
            f"ingesting {len(selected)} operations"
            + (f" (left out: {left_out})" if left_out else "")
        )
        live = timed_ingestion(settings, catalogue, left_out, standin.pid, report=print)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        summary = live.summary
        top_level = {t: n for t, n in summary.rows_loaded.items() if "__" not in t}
        rows = sum(top_level.values())
        nested = summary.total_rows_loaded - rows

        urls = floor_urls(live.urls, catalogue)
        print(f"\nfetching the same {len(urls):,} bodies again for the floor ...")
        folders = save_bodies(live.urls, set(urls), OUT / "pages", catalogue)
    finally:
        standin.terminate()
        standin.wait(timeout=30)

    print("\nthe same run against the recorded bodies, served by bench/replay.py ...")
    replay, replay_url = start_replay(OUT / "pages")
    try:
        replays = [
            timed_ingestion(
                dataclasses.replace(
                    settings,
                    warehouse_path=OUT / folder / "incomaker.duckdb",
                    base_url=replay_url + httpx.URL(base_url).path.rstrip("/"),
                ),
                catalogue,
                left_out,
                replay.pid,
                report=None,
                client_processes=client_processes,
            )
            for folder, client_processes in (("replay", True), ("replay-one-process", False))
        ]
    finally:
        replay.terminate()
        replay.wait(timeout=30)
    replayed, one_process = replays
    for run in replays:
        if run.summary.rows_loaded != summary.rows_loaded:
            raise SystemExit(
                "the replayed run loaded other rows than the live one: "
                f"{run.summary.rows_loaded} against {summary.rows_loaded}"
            )

    floor_load_before = load_average()
    floor_cpu_before = own_cpu_seconds()
    floor_seconds, floor_rows = floor(folders, OUT / "floor.duckdb", catalogue)
    floor_cpu = own_cpu_seconds() - floor_cpu_before
    floor_load_after = load_average()
    floor_rate = floor_rows / floor_seconds
    nested_tables = [name for name in selected if has_nested_lists(catalogue.get(name))]
    result = {
        "scale": args.scale,
        "selection": "top-level" if args.top_level else "all" if args.all else "default",
        "operations": len(selected),
        "left_out": left_out,
        "requests": summary.requests,
        "retries": summary.retries,
        "rows": rows,
        "nested_rows": nested,
        "peak_memory_mb": round(peak_mb),
        "live": live.figures(),
        "replay": replayed.figures(),
        "replay_one_process": one_process.figures(),
        "floor_rows": floor_rows,
        "floor_seconds": round(floor_seconds, 2),
        "floor_rows_per_second": round(floor_rate),
        "floor_cpu_seconds": round(floor_cpu, 1),
        "load_average_floor": [floor_load_before, floor_load_after],
        "ratio_to_floor_live": round(rows / live.wall / floor_rate, 3),
        "ratio_to_floor": round(rows / replayed.wall / floor_rate, 3),
        "ratio_to_floor_one_process": round(rows / one_process.wall / floor_rate, 3),
        "operations_with_nested_lists": nested_tables,
    }
    (OUT / f"ingest-{result['selection']}.json").write_text(json.dumps(result, indent=2))
    print(
        f"\n{rows:,} rows (+{nested:,} nested), {summary.requests:,} requests; "
        f"peak memory {peak_mb:,.0f} MB, the client's {settings.fetch_processes} processes "
        f"{live.client_peak_mb:,.0f} MB together"
    )
    for name, run, server in (
        ("live", live, "the stand-in"),
        ("replay", replayed, "bench/replay.py"),
        ("replay, one process", one_process, "bench/replay.py"),
    ):
        print(
            f"{name + ':':<9} {run.wall:.1f} s = {run.rows / run.wall:,.0f} rows/s over HTTP; "
            f"dlt steps {run.steps}"
        )
        server_text = "" if run.server_cpu is None else f", {server} {run.server_cpu:.1f} s"
        print(
            f"          CPU: the pipeline {run.cpu:.1f} s (its client's processes "
            f"{run.client_cpu:.1f} s){server_text}; load average {run.load[0]} -> {run.load[1]}"
        )
    print(
        f"floor:    {floor_rows:,} rows in {floor_seconds:.1f} s = {floor_rate:,.0f} rows/s "
        "(DuckDB read_json of the same bodies from local files)"
    )
    print(
        f"          CPU {floor_cpu:.1f} s; load average {floor_load_before} -> {floor_load_after}"
    )
    print(
        f"ratio:    {result['ratio_to_floor']:.2f} of the floor against the replayed bodies "
        f"(target >= 0.5; {result['ratio_to_floor_one_process']:.2f} with the client in the run's "
        f"process), {result['ratio_to_floor_live']:.2f} against the live stand-in, whose "
        "rendering shares our cores; memory target < 2048 MB (the run's and its client's "
        f"processes): {'met' if peak_mb + live.client_peak_mb < 2048 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
