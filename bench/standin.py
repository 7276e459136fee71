"""Benchmark the stand-in at a scale (default large): world build time, peak RSS, rows/s of
JSON served over loopback for the biggest paged lists, and per-id requests/s.

    .venv/bin/python bench/standin.py [--scale large] [--seed 1] [--size 1000] [--per-id N]
                                      [--per-id-only] [--catalogue FILE]

Lists are paged in the stand-in's paging dialect (incomaker_elt/contract/paging.py): the
catalogue's own, or
the one an override file gives (`--catalogue FILE`, else INCOMAKER_STANDIN_CATALOGUE, as for
`incomaker-elt simulate`), for the server and the client alike.

The server runs in this process (a uvicorn thread); the client runs in a child process, so the
figures are those a separate ingestion process would see. The per-id figure is server work only
(`StandIn.handle` called in-process): for every per-id operation, the first N parent ids in the
parent's order (as an ingestion walks them) with the first page of each, twice: the first walk
pays for whatever the server prepares, the second is what the prepared state costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# This file is named like the package it measures; keep its folder off the import path so
# `import standin` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

CANDIDATES = ("order_recommendation", "orders", "delivery_recipient_activity", "contacts")
TOKEN = "bench-token"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def records_of(op, body) -> list:
    """The records of one body, wherever the operation's paging dialect keeps them."""
    from incomaker_elt.contract.paging import WHOLE_BODY, dig

    return [body] if op.records_path == WHOLE_BODY else dig(body, op.records_path) or []


def pages(op, get, size: int, path: str | None = None):
    """Every parsed body of a listing, paged as the operation's dialect says; `get(path, params)`
    answers the body's bytes."""
    import orjson

    from incomaker_elt.contract.paging import walk

    def fetch(at: str, params: dict[str, str]):
        # every page is parsed, as a loader would; orjson so the server is what is measured
        body = orjson.loads(get(at, params))
        return body, len(records_of(op, body)), op.paging.totals(body)

    return walk(op.paging, fetch, path or op.path, {}, size)


def load_dialect(catalogue_file: str | None):
    """The catalogue the stand-in speaks: as it is, or with the override file given."""
    from incomaker_elt.contract.catalogue import load_catalogue

    return load_catalogue(Path(catalogue_file) if catalogue_file else None)


def client(base_url: str, name: str, size: int, catalogue_file: str | None) -> None:
    """Child process: page through one list, print JSON with rows, seconds and pages."""
    import httpx

    op = load_dialect(catalogue_file).get(name)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rows, count = 0, 0
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, headers=headers, timeout=600) as http:
        for body in pages(op, lambda path, params: http.get(path, params=params).content, size):
            rows += len(records_of(op, body))
            count += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "pages": count}))


def parent_values(standin, op, limit: int) -> list[object]:
    """The first `limit` values of the field feeding `op`, from its parent's first pages."""
    parent = standin.catalogue.get(op.parent.resource)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    values: list[object] = []

    def get(path: str, params: dict[str, str]) -> bytes:
        reply = standin.handle("GET", path, list(params.items()), headers)
        assert reply.status == 200, (parent.name, path, reply.status, reply.body[:200])
        return reply.body

    for path in listings(standin, parent, limit):
        for body in pages(parent, get, 1000, path):
            for record in records_of(parent, body):
                value = record[op.parent.field]
                if value is not None and value not in values:
                    values.append(value)
            if len(values) >= limit:
                return values[:limit]
    return values


def listings(standin, op, limit: int):
    """The paths of `op`'s listing: one, or one per value of its own parent (a per-id operation
    feeding another: RFM cell contacts per cell), as many as it takes to find `limit` values."""
    if op.parent is None:
        yield op.path
        return
    if op.parent.into not in op.path_params:
        raise SystemExit(f"{op.name}: a parent fed through a query list is not walked here")
    for value in parent_values(standin, op, limit):
        yield op.url_path(**{op.parent.into: value})


def per_id_requests(standin, op, limit: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """(path, query) of the first page for each of the first `limit` parent ids."""
    values = parent_values(standin, op, limit * (op.parent.batch or 1))
    size = list(op.paging.params(0, 1000).items()) if op.is_paged else []
    if op.parent.batch:
        batches = [values[i : i + op.parent.batch] for i in range(0, len(values), op.parent.batch)]
        ids = [(op.parent.into, ",".join(str(v) for v in batch)) for batch in batches]
        return [(op.path, [*size, pair]) for pair in ids]
    return [(op.url_path(**{op.parent.into: v}), size) for v in values]


def per_id(standin, limit: int) -> None:
    """Per-id requests/s in-process, over all per-id operations, for two walks (see above). Each
    operation is walked twice in a row, as a client finishes one operation before the next."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ops = [op for op in standin.catalogue if op.parent]
    totals = {"first": [0, 0.0, []], "second": [0, 0.0, []]}
    for op in ops:
        requests = per_id_requests(standin, op, limit)
        for walk in ("first", "second"):
            started = time.perf_counter()
            for path, query in requests:
                reply = standin.handle("GET", path, query, headers)
                assert reply.status == 200, (op.name, path, reply.status, reply.body[:200])
            seconds = time.perf_counter() - started
            totals[walk][0] += len(requests)
            totals[walk][1] += seconds
            totals[walk][2].append((seconds / max(len(requests), 1), op.name))
    for walk, (count, seconds, each) in totals.items():
        worst = ", ".join(f"{n} {s * 1000:.2f} ms" for s, n in sorted(each, reverse=True)[:3])
        print(
            f"per-id {walk} walk: {count:,} requests over {len(ops)} operations in "
            f"{seconds:.2f} s = {count / seconds:,.0f} requests/s, "
            f"{seconds / count * 1000:.3f} ms each; slowest per request: {worst}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="large")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument(
        "--per-id", type=int, default=200, metavar="N", help="parent ids per per-id operation"
    )
    parser.add_argument("--per-id-only", action="store_true", help="skip the loopback lists")
    parser.add_argument(
        "--catalogue",
        default=os.environ.get("INCOMAKER_STANDIN_CATALOGUE") or None,
        metavar="FILE",
        help="a catalogue override file: the API dialect the stand-in speaks",
    )
    parser.add_argument("--client", nargs=3, metavar=("BASE_URL", "OPERATION", "SIZE"))
    args = parser.parse_args()
    if args.client:
        client(args.client[0], args.client[1], int(args.client[2]), args.catalogue)
        return 0

    import httpx

    from incomaker_elt.standin import StandIn, build_world

    started = time.perf_counter()
    world = build_world(args.seed, args.scale)
    print(
        f"world {args.scale} seed {args.seed}: built in {time.perf_counter() - started:.1f} s, "
        f"peak RSS {peak_rss_mb():.0f} MB"
    )
    print("  " + ", ".join(f"{k} {v:,}" for k, v in world.counts.items()))
    catalogue = load_dialect(args.catalogue)
    standin = StandIn(world, token=TOKEN, catalogue=catalogue)
    if args.per_id:
        per_id(standin, args.per_id)
    if args.per_id_only:
        print(f"peak RSS {peak_rss_mb():.0f} MB")
        return 0
    with standin.serve() as base_url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        sizes = {}
        for name in CANDIDATES:
            op = catalogue.get(name)
            t = time.perf_counter()
            body = httpx.get(
                f"{base_url}{op.path}", params=op.paging.params(0, 1), headers=headers, timeout=600
            ).json()
            totals = op.paging.totals(body)
            if totals.total_items is None:
                raise SystemExit(
                    f"{name}: the catalogue's paging dialect states no total of items; this "
                    "benchmark picks the biggest lists by their totals"
                )
            sizes[name] = totals.total_items
            print(
                f"{name}: {sizes[name]:,} records, first page (query + cache) in "
                f"{time.perf_counter() - t:.2f} s"
            )
        for name in sorted(sizes, key=sizes.get, reverse=True)[:2]:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    *(["--catalogue", args.catalogue] if args.catalogue else []),
                    "--client",
                    base_url,
                    name,
                    str(args.size),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout)
            print(
                f"{name}: {result['rows']:,} rows in {result['pages']} pages of {args.size} "
                f"over loopback: {result['seconds']:.1f} s = "
                f"{result['rows'] / result['seconds']:,.0f} rows/s"
            )
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
