"""Benchmark the page decoders on the stand-in's orders: pages/s of the normal (Arrow) path, of
the careful path a page takes when a value does not fit its type, and of the dict path.

    .venv/bin/python bench/decode.py [--pages 200] [--size 1000] [--scale small] [--details 2000]
                                     [--compare path/to/records.py]

Bodies are fetched once from the stand-in in-process (cycled when the listing has fewer pages),
then decoded in a loop in this process, so only decoding is timed. `--compare` times the same
bodies with another version of incomaker_elt/ingestion/records.py (e.g. `git show
HEAD~1:incomaker_elt/ingestion/records.py
> /tmp/records_before.py`), for a before/after ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# This folder holds a file named like the stand-in package; keep it off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import httpx  # noqa: E402

from incomaker_elt.contract.catalogue import Operation, default_catalogue  # noqa: E402
from incomaker_elt.ingestion.records import arrow_decoder, careful_page, dict_decoder  # noqa: E402
from incomaker_elt.standin import DEFAULT_TODAY, StandIn, build_world  # noqa: E402

TOKEN = "bench-token"


def bodies(standin: StandIn, op: Operation, pages: int, size: int) -> tuple[list[bytes], int]:
    """`pages` bodies of the operation's listing (its pages, cycled), and how many differ."""
    params = {"dateFrom": "2020-01-01", "dateTo": str(DEFAULT_TODAY)} if op.is_windowed else {}
    found: list[bytes] = []
    with httpx.Client(
        transport=standin.transport(),
        base_url="http://standin",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        for index in range(pages):
            response = client.get(op.url_path(), params={**params, **op.paging.params(index, size)})
            response.raise_for_status()
            if index and b'"orderId"' not in response.content:
                break  # past the last page
            found.append(response.content)
    return [found[i % len(found)] for i in range(pages)], len(found)


def detail_bodies(standin: StandIn, op: Operation, ids: list[object]) -> list[bytes]:
    with httpx.Client(
        transport=standin.transport(),
        base_url="http://standin",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        return [client.get(op.url_path(orderId=i)).content for i in ids]


def timed(decode: Callable[[bytes], object], pages: list[bytes], rounds: int = 3) -> float:
    """Best CPU seconds of `rounds` passes over the pages (CPU time: a shared machine's other
    processes do not count)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for body in pages:
            decode(body)
        best = min(best, time.process_time() - started)
    return best


def interleaved(
    first: Callable[[bytes], object], second: Callable[[bytes], object], pages: list[bytes]
) -> tuple[float, float]:
    """Best CPU seconds of each of two decoders, their passes alternating (fair under noise)."""
    a = b = float("inf")
    for _ in range(5):
        a = min(a, timed(first, pages, 1))
        b = min(b, timed(second, pages, 1))
    return a, b


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("records_compared", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--scale", default="small")
    parser.add_argument("--details", type=int, default=2000)
    parser.add_argument("--compare", type=Path, help="another records.py to time the same bodies")
    args = parser.parse_args()

    catalogue = default_catalogue()
    orders, detail = catalogue.get("orders"), catalogue.get("order_detail")
    standin = StandIn(build_world(1, args.scale), token=TOKEN)
    pages, distinct = bodies(standin, orders, args.pages, args.size)
    rows = arrow_decoder(orders)(pages[0]).rows
    ids = [
        FIRST for FIRST in arrow_decoder(orders)(pages[0]).records.column("order_id").to_pylist()
    ]
    details = detail_bodies(
        standin, detail, (ids * (args.details // max(1, len(ids)) + 1))[: args.details]
    )
    print(
        f"{len(pages)} pages of {rows} orders ({distinct} different, cycled), "
        f"{len(details)} order details ({args.scale})"
    )

    fast = timed(arrow_decoder(orders), pages)
    careful = timed(lambda body: careful_page(orders, body.strip()), pages, rounds=1)
    nested = timed(dict_decoder(detail), details)
    print(f"  normal path (Arrow):  {fast:7.3f} s  {len(pages) / fast:8.0f} pages/s")
    print(f"  careful path:         {careful:7.3f} s  {len(pages) / careful:8.0f} pages/s")
    print(f"  dict path (details):  {nested:7.3f} s  {len(details) / nested:8.0f} bodies/s")
    if args.compare:
        other = load_module(args.compare)
        fast, before = interleaved(arrow_decoder(orders), other.arrow_decoder(orders), pages)
        nested, nested_before = interleaved(
            dict_decoder(detail), other.dict_decoder(detail), details
        )
        print(f"  against {args.compare} (CPU seconds, now / then):")
        print(f"    normal path (Arrow): {fast:7.3f} / {before:7.3f} s = {fast / before:.2f}")
        print(
            f"    dict path (details): {nested:7.3f} / {nested_before:7.3f} s "
            f"= {nested / nested_before:.2f}"
        )


if __name__ == "__main__":
    main()
