"""Benchmark the stand-in at a scale (default large): world build time, peak RSS, and rows/s of
JSON served over loopback for the biggest paged lists.

    .venv/bin/python bench/standin.py [--scale large] [--seed 1] [--size 1000]

The server runs in this process (a uvicorn thread); the client runs in a child process, so the
figures are those a separate ingestion process would see.
"""

from __future__ import annotations

import argparse
import json
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


def client(base_url: str, path: str, size: int) -> None:
    """Child process: page through one list, print JSON with rows, seconds and pages."""
    import httpx
    import orjson

    headers = {"Authorization": f"Bearer {TOKEN}"}
    rows, pages, page = 0, 0, 0
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, headers=headers, timeout=600) as http:
        while True:
            # every page is parsed, as a loader would; orjson so the server is what is measured
            body = orjson.loads(http.get(path, params={"page": page, "size": size}).content)
            rows += len(body["content"])
            pages += 1
            page += 1
            if page >= body["totalPages"]:
                break
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "pages": pages}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="large")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--client", nargs=3, metavar=("BASE_URL", "PATH", "SIZE"))
    args = parser.parse_args()
    if args.client:
        client(args.client[0], args.client[1], int(args.client[2]))
        return 0

    import httpx

    from ingestion.catalogue import default_catalogue
    from standin import StandIn, build_world

    started = time.perf_counter()
    world = build_world(args.seed, args.scale)
    print(
        f"world {args.scale} seed {args.seed}: built in {time.perf_counter() - started:.1f} s, "
        f"peak RSS {peak_rss_mb():.0f} MB"
    )
    print("  " + ", ".join(f"{k} {v:,}" for k, v in world.counts.items()))
    standin = StandIn(world, token=TOKEN)
    catalogue = default_catalogue()
    with standin.serve() as base_url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        sizes = {}
        for name in CANDIDATES:
            path = catalogue.get(name).path
            t = time.perf_counter()
            body = httpx.get(
                f"{base_url}{path}", params={"size": 1}, headers=headers, timeout=600
            ).json()
            sizes[name] = body["totalElements"]
            print(
                f"{name}: {sizes[name]:,} records, first page (query + cache) in "
                f"{time.perf_counter() - t:.2f} s"
            )
        for name in sorted(sizes, key=sizes.get, reverse=True)[:2]:
            path = catalogue.get(name).path
            out = subprocess.run(
                [sys.executable, __file__, "--client", base_url, path, str(args.size)],
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
