"""Our ingestion against dlt's own `rest_api` source on the same pages: why we wrote our pager.

    python bench/rest_api_compare.py                  # medium world, the windowed listings
    python bench/rest_api_compare.py --scale small

Both read the same operations from the same stand-in (its own process, loopback HTTP, offset
paging with `paging.totalItems`, 1,000 records a page) into their own DuckDB file: ours through
`run_ingestion` (the catalogue's dialect, Arrow decoding, parallel pages), dlt's through
`rest_api_source` configured for the same paths, window, records and paginator (Python dicts,
dlt's normaliser, one page after the other). The selection is every windowed top-level listing
without nested lists, which `rest_api` reads without any code of ours (but the RFM ones,
which ours asks for the 365-day analysis window, not the whole history). Prints rows, seconds and
rows/s of each and the ratio; run order alternates over the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dlt
import duckdb
from dlt.sources.rest_api import rest_api_source

from incomaker_elt.contract.catalogue import Operation, default_catalogue
from incomaker_elt.contract.settings import RAW_DATASET, load_settings
from incomaker_elt.ingestion.pipeline import run_ingestion
from incomaker_elt.run import standin_process

START, END = date(2025, 1, 1), date(2026, 6, 30)


def selection() -> list[Operation]:
    return [
        op
        for op in default_catalogue()
        if op.parent is None
        and op.is_paged
        and op.is_windowed
        and not op.nested
        and not op.path_params
        and set(op.params) <= {"dateFrom", "dateTo"}
        and op.group != "rfm"  # ours asks RFM aggregates for the 365-day analysis window
    ]


def rows_in(path: Path, schema: str, tables: list[str]) -> int:
    with duckdb.connect(str(path), read_only=True) as db:
        return sum(db.execute(f'select count(*) from {schema}."{t}"').fetchone()[0] for t in tables)


def ours(ops: list[Operation], base_url: str, token: str, folder: Path) -> tuple[int, float]:
    warehouse = folder / "ours.duckdb"
    settings = dataclasses.replace(
        load_settings(), warehouse_path=warehouse, base_url=base_url, api_token=token
    )
    started = time.perf_counter()
    run_ingestion(settings, only=[op.name for op in ops], start=START, end=END)
    seconds = time.perf_counter() - started
    return rows_in(warehouse, RAW_DATASET, [op.name for op in ops]), seconds


def theirs(ops: list[Operation], base_url: str, token: str, folder: Path) -> tuple[int, float]:
    warehouse = folder / "theirs.duckdb"
    page = ops[0].paging
    source = rest_api_source(
        {
            "client": {
                "base_url": base_url,
                "auth": {"type": "bearer", "token": token},
                "paginator": {
                    "type": "offset",
                    "limit": 1000,
                    "offset_param": page.offset_param,
                    "limit_param": page.size_param,
                    "total_path": page.total_items,
                },
            },
            "resource_defaults": {"write_disposition": "append"},
            "resources": [
                {
                    "name": op.name,
                    "endpoint": {
                        "path": op.url_path(),
                        "params": {"dateFrom": START.isoformat(), "dateTo": END.isoformat()},
                        "data_selector": op.records_path,
                    },
                }
                for op in ops
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="rest_api_compare",
        destination=dlt.destinations.duckdb(str(warehouse)),
        dataset_name="raw_rest_api",
        pipelines_dir=str(folder / "dlt"),
    )
    started = time.perf_counter()
    pipeline.run(source)
    seconds = time.perf_counter() - started
    return rows_in(warehouse, "raw_rest_api", [op.name for op in ops]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ops = selection()
    print(f"{len(ops)} operations: {', '.join(op.name for op in ops)}")
    print(f"load before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with standin_process(args.scale, 1, END) as standin:
        for round_number in range(args.rounds):
            runners = [("ours", ours), ("rest_api", theirs)]
            if round_number % 2:
                runners.reverse()
            figures = {}
            for name, runner in runners:
                with tempfile.TemporaryDirectory(prefix="bench-rest-api-") as folder:
                    rows, seconds = runner(ops, standin.base_url, standin.token, Path(folder))
                figures[name] = (rows, seconds)
                print(
                    f"  round {round_number + 1} {name:<8}: {rows:>10,} rows {seconds:7.1f} s "
                    f"{rows / seconds:>10,.0f} rows/s",
                    flush=True,
                )
            ratio = figures["rest_api"][1] / figures["ours"][1]
            print(f"round {round_number + 1}: rest_api takes {ratio:.1f}x our time", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
