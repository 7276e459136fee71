"""`incomaker-elt simulate`: serve the stand-in API until Ctrl-C (or answer once with --check)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

from incomaker_elt.contract.command_line import iso_date

DEFAULT_PORT = 8765
TOKEN_ENV = "INCOMAKER_STANDIN_TOKEN"
DIALECT_ENV = "INCOMAKER_STANDIN_CATALOGUE"
"""A catalogue override file: the API dialect the stand-in speaks (paging, paths, names, ids)."""
PARENT_PID_ENV = "INCOMAKER_STANDIN_PARENT_PID"
"""Set by the process that starts the stand-in with --exit-with-parent: whose death ends it."""

_PR_SET_PDEATHSIG = 1
_GRACE_SECONDS = 10.0


def exit_with_parent() -> None:
    """End this process when the process that started it ends, however it ends (even `kill -9`).

    On Linux the kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG). Everywhere, the
    parent holds the write end of our standard input: when it dies the pipe closes, reading it
    returns, and we stop as on Ctrl-C (then exit outright if that has not ended us within 10 s).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the pipe below still ends us
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(0)  # the parent died before we could ask to follow it

    def watch_parent() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(_GRACE_SECONDS)
        os._exit(0)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()


def register(subparsers: argparse._SubParsersAction) -> None:
    from incomaker_elt.standin.faults import FAULT_KINDS
    from incomaker_elt.standin.scales import SCALES

    p = subparsers.add_parser(
        "simulate",
        help="serve the stand-in Incomaker API (one synthetic account) on a local port",
        description="Serve one synthetic Incomaker account as the Reporting v1 API. "
        "The same seed and scale always give the same answers.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument(
        "--token",
        default=None,
        help=f"bearer token clients must send (default: ${TOKEN_ENV} or 'standin-token')",
    )
    p.add_argument("--scale", choices=tuple(SCALES), default="small")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--today", type=iso_date, default=None, help="the world's today (ISO date)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail")
    p.add_argument(
        "--fault-kinds",
        nargs="+",
        default=["429", "500", "502", "503", "truncate"],
        help=f"what a failing request does, some of {', '.join(FAULT_KINDS)} "
        "(spaces or commas between them)",
    )
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--slow-seconds", type=float, default=5.0, help="delay of the 'slow' fault")
    p.add_argument("--drift", action="store_true", help="add a new field to every record")
    p.add_argument(
        "--catalogue",
        metavar="OVERRIDE_YAML",
        default=None,
        help="speak another API dialect: a catalogue override file (the format of "
        f"INCOMAKER_CATALOGUE_OVERRIDES) applied to what the stand-in serves (default: "
        f"${DIALECT_ENV}, else the catalogue as it is)",
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one ends (its standard input closes)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="start, call GET /conversions/totals once, print the answer and exit",
    )
    p.set_defaults(handler=simulate)


def simulate(args: argparse.Namespace) -> int:
    import httpx

    from incomaker_elt.contract.catalogue import CatalogueError, load_catalogue
    from incomaker_elt.standin import DEFAULT_TODAY, Faults, StandIn, build_world

    if args.exit_with_parent:
        exit_with_parent()
    token = args.token or os.environ.get(TOKEN_ENV) or "standin-token"
    today = args.today or DEFAULT_TODAY
    try:
        faults = Faults(
            rate=args.fault_rate,
            kinds=tuple(k for arg in args.fault_kinds for k in arg.split(",") if k),
            slow_seconds=args.slow_seconds,
            drift=args.drift,
            seed=args.fault_seed,
        )
        dialect = args.catalogue or os.environ.get(DIALECT_ENV)
        setting = "--catalogue" if args.catalogue else DIALECT_ENV
        catalogue = load_catalogue(Path(dialect).resolve() if dialect else None, setting)
        world = build_world(args.seed, args.scale)
        standin = StandIn(world, today=today, token=token, faults=faults, catalogue=catalogue)
    except ValueError as exc:  # a CatalogueError too
        what = "the dialect to speak: " if isinstance(exc, CatalogueError) else ""
        print(f"incomaker-elt simulate: {what}{exc}", file=sys.stderr)
        return 2
    try:
        with standin.serve(args.host, args.port) as base_url:
            print(
                f"Incomaker stand-in serving {base_url} (seed {args.seed}, scale {args.scale}, "
                f"today {today.isoformat()}; world built in {world.build_seconds:.1f} s)",
                flush=True,
            )
            if args.check:
                response = httpx.get(
                    f"{base_url}/conversions/totals",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )
                print(f"GET /conversions/totals -> {response.status_code}")
                print(response.text)
                return 0 if response.status_code == 200 else 1
            print("Press Ctrl-C to stop.", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stand-in stopped", file=sys.stderr)
        return 0
    except RuntimeError as exc:
        print(f"incomaker-elt simulate: {exc}", file=sys.stderr)
        return 1
