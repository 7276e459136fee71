"""The lifecycle property, longer: more seeds, more nights and disruptions, the first load and the
fresh reference load through the refresh job as `incomaker-elt run` runs them (tests/lifecycle.py).

    python bench/lifecycle.py                          # seeds 1..3, small world
    python bench/lifecycle.py --seeds 8 --nights 5     # one seed, longer
    python bench/lifecycle.py --scale medium --seeds 1 # a bigger world (minutes per run)
    python bench/lifecycle.py --quick                  # the make-test shape (loads by commands)

Prints every step with its outcome and time, then per seed the property: marts equal to a fresh
full load at the same today (with example rows), no raw key twice, the serving copy always a
complete publication. Exits 1 when any seed breaks the property.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--scale", default="small", choices=("small", "medium", "large"))
    p.add_argument("--world-seed", type=int, default=1, help="seed of the stand-in's world")
    p.add_argument("--nights", type=int, default=4)
    p.add_argument("--disruptions", type=int, default=6)
    p.add_argument("--max-dbt-kills", type=int, default=2)
    p.add_argument("--fault-rate", type=float, default=0.01)
    p.add_argument("--first-today", type=date.fromisoformat, default=date(2026, 6, 26))
    p.add_argument(
        "--quick",
        action="store_true",
        help="first and reference loads by commands, not through the job (as in make test)",
    )
    p.add_argument("--keep", type=Path, help="keep the warehouses in this folder")
    return p.parse_args()


def main() -> int:
    args = _arguments()
    import lifecycle as lc

    from incomaker_elt.contract.catalogue import default_catalogue
    from incomaker_elt.orchestration.ingestion_assets import partitioned_operations
    from incomaker_elt.orchestration.transform import prepare_manifest
    from incomaker_elt.standin import build_world

    shape = lc.Shape(
        nights=args.nights,
        disruptions=args.disruptions,
        first_today=args.first_today,
        max_dbt_kills=args.max_dbt_kills,
        fault_rate=args.fault_rate,
        nightly_build_share=0.3,
        first_load_via="commands" if args.quick else "run",
    )
    started = time.monotonic()
    world = build_world(args.world_seed, args.scale)
    prepare_manifest()
    partitioned = [op.name for op in partitioned_operations(default_catalogue())]
    print(
        f"lifecycle bench: {args.scale} world {args.world_seed}, seeds {args.seeds}, "
        f"{shape.nights} nights from {shape.first_today}, {shape.disruptions} disruptions, "
        f"first load via {shape.first_load_via}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="lifecycle-bench-") as scratch:
        root = args.keep or Path(scratch)
        references = lc.References(root / "references", world)
        broken: list[int] = []
        for seed in args.seeds:
            steps = lc.plan_lifecycle(seed, shape, partitioned)
            reference, reference_seconds = references.get(
                shape.final_today, shape.partitions_start, shape.first_load_via
            )
            print(f"\nseed {seed}:", flush=True)
            try:
                outcome = lc.Lifecycle(root / f"seed{seed}", world).run(
                    seed, shape, steps, reference, reference_seconds
                )
                problems = lc.property_problems(outcome)
            except Exception as exc:  # the harness could not finish this seed: say so, go on
                broken.append(seed)
                print(f"  seed {seed} could not be completed: {type(exc).__name__}: {exc}")
                continue
            print(outcome.plan_text())
            print(f"  reference (fresh full load) {reference_seconds:.1f} s")
            if problems:
                broken.append(seed)
                print("  PROPERTY BROKEN:")
                print("\n".join(f"    {line}" for line in problems.splitlines()))
            else:
                print("  property holds: marts equal, no raw key twice, serving copy complete")
    seconds = time.monotonic() - started
    print(f"\n{len(args.seeds)} seeds in {seconds:.0f} s; broken: {broken or 'none'}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
