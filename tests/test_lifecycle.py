"""Nothing bricks the warehouse: a seeded lifecycle of runs, backfills, faults and kills, then the
property (tests/lifecycle.py): marts equal a fresh full load, no raw key twice, the serving copy
always a complete publication.

Small on purpose, to stay in `make test`: the small world, one night, two disruptions, at most
one kill that costs a dbt build, and the first load and the fresh load by commands rather than
through the job (a job over the whole history records an event per day and table: minutes).
The fresh full load is the session's (tests/conftest.py `full_load`, at the stand-in's default
today, where the lifecycle ends), shared with the other tests that compare with one and only
read here (the check of the checks changes a copy). `make test-lifecycle`
(bench/lifecycle.py) runs more seeds and longer lifecycles. Other seeds:

    INCOMAKER_LIFECYCLE_SEEDS=7,8 .venv/bin/pytest tests/test_lifecycle.py
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
from lifecycle import (
    CLEAN_RUN,
    FIRST_LOAD,
    KILL_RUN,
    KILL_TRANSFORM,
    Lifecycle,
    LifecycleOutcome,
    Shape,
    describe_differences,
    duplicate_keys,
    mart_differences,
    plan_lifecycle,
)

SHAPE = Shape(
    nights=1,
    disruptions=2,
    first_today=date(2026, 6, 29),  # the last night's today is the shared full load's
    max_dbt_kills=1,
    first_load_builds=False,
    first_load_via="commands",
    ingest_kill_seconds=(1.0, 12.0),
    longest_backfill_days=60,
)
DEFAULT_SEEDS = (6,)
"""Seed 6: a first load at 2026-06-29 (faults), `incomaker-elt transform` killed 8.4 s in,
today moves to 2026-06-30, a Dagster backfill of four event tables over 2025-04-07..19 (faults
and drift), the clean nightly run."""
SEEDS = (
    tuple(int(s) for s in os.environ.get("INCOMAKER_LIFECYCLE_SEEDS", "").split(",") if s.strip())
    or DEFAULT_SEEDS
)


def _partitioned() -> list[str]:
    from incomaker_elt.contract.catalogue import default_catalogue
    from incomaker_elt.orchestration.ingestion_assets import partitioned_operations

    return [op.name for op in partitioned_operations(default_catalogue())]


@pytest.fixture(scope="module")
def reference(full_load) -> Path:
    """The fresh full load at the lifecycle's last today (the session's, read-only)."""
    assert (full_load.today, full_load.start) == (SHAPE.final_today, SHAPE.partitions_start), (
        "the lifecycle must end at the shared full load's today and start where it starts"
    )
    return full_load.warehouse


@pytest.fixture(scope="module", params=SEEDS, ids=lambda seed: f"seed{seed}")
def lifecycle(
    request: pytest.FixtureRequest,
    small_world,
    reference: Path,
    full_load,
    tmp_path_factory: pytest.TempPathFactory,
) -> LifecycleOutcome:
    from incomaker_elt.orchestration.transform import prepare_manifest

    prepare_manifest()
    seed = request.param
    steps = plan_lifecycle(seed, SHAPE, _partitioned())
    root = tmp_path_factory.mktemp(f"lifecycle-seed{seed}")
    outcome = Lifecycle(root, small_world).run(seed, SHAPE, steps, reference, full_load.seconds)
    print(outcome.plan_text())
    return outcome


def test_a_lifecycle_is_planned_from_its_seed_alone() -> None:
    partitioned = _partitioned()
    plans = {seed: plan_lifecycle(seed, SHAPE, partitioned) for seed in range(40)}
    assert plans[5] == plan_lifecycle(5, SHAPE, partitioned)
    assert len({tuple(plan) for plan in plans.values()}) == len(plans)
    for plan in plans.values():
        assert plan[0].kind == FIRST_LOAD and plan[0].today == SHAPE.first_today
        assert plan[-1].kind == CLEAN_RUN and plan[-1].today == SHAPE.final_today
        assert plan[-1].build and not plan[-1].faults.rate
        todays = [step.today for step in plan]
        assert all(0 <= (b - a).days <= 1 for a, b in zip(todays, todays[1:], strict=False))
        dbt_kills = [
            s for s in plan if s.kind == KILL_TRANSFORM or (s.kind == KILL_RUN and s.build)
        ]
        assert len(dbt_kills) <= SHAPE.max_dbt_kills
        for step in plan:
            if step.first is not None:
                assert SHAPE.partitions_start <= step.first <= step.last <= step.today
    kinds = {step.kind for plan in plans.values() for step in plan}
    assert kinds >= {"backfill", "kill_ingest", "kill_transform", "kill_run"}
    longer = plan_lifecycle(1, dataclasses.replace(SHAPE, nights=3), partitioned)
    nightly = [step.today for step in longer if step.kind == "nightly"]
    assert [(day - SHAPE.first_today).days for day in nightly] == [1, 2]


def test_the_clean_run_succeeds(lifecycle: LifecycleOutcome) -> None:
    last = lifecycle.steps[-1]
    assert last.step.kind == CLEAN_RUN
    assert last.result == "succeeded", lifecycle.plan_text()


def test_every_mart_equals_a_fresh_full_load(lifecycle: LifecycleOutcome) -> None:
    differences = mart_differences(lifecycle.warehouse, lifecycle.reference)
    assert not differences, f"{lifecycle.plan_text()}\n{describe_differences(differences)}"


def test_no_raw_table_holds_a_key_twice(lifecycle: LifecycleOutcome) -> None:
    repeated = duplicate_keys(lifecycle.warehouse)
    lines = "\n".join(f"  {table}: {what}" for table, what in repeated.items())
    assert not repeated, f"{lifecycle.plan_text()}\nraw keys held twice:\n{lines}"


def test_the_serving_copy_is_always_a_complete_publication(lifecycle: LifecycleOutcome) -> None:
    lines = "\n".join(f"  {v}" for v in lifecycle.serving_violations)
    assert not lifecycle.serving_violations, f"{lifecycle.plan_text()}\n{lines}"


def test_the_checks_see_a_changed_mart_row_and_a_repeated_key(
    reference: Path, tmp_path: Path
) -> None:
    """The property's checks are not vacuous: one changed mart row and one repeated raw key in
    a copy of the fresh load are both found, with the table named."""
    copy = tmp_path / "changed.duckdb"
    shutil.copyfile(reference, copy)
    con = duckdb.connect(str(copy))
    try:
        con.execute(
            "delete from marts.fct_conversions where conversion_id = "
            "(select min(conversion_id) from marts.fct_conversions)"
        )
        con.execute("insert into incomaker_raw.orders select * from incomaker_raw.orders limit 1")
    finally:
        con.close()
    assert mart_differences(reference, reference) == []
    (difference,) = mart_differences(copy, reference)
    assert difference.relation == "marts.fct_conversions"
    assert (difference.only_left, difference.only_right) == (0, 1)
    assert "fct_conversions" in describe_differences([difference])
    assert set(duplicate_keys(copy)) - set(duplicate_keys(reference)) == {"orders"}
