"""The Dagster definitions, pinned: asset keys and groups, checks and whether they block, jobs,
schedules, sensors and resources. A change to any of them shows up as a diff of
tests/snapshots/definitions.txt in review; after a deliberate change, rewrite it with

    INCOMAKER_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_definitions_snapshot.py
"""

import os
from pathlib import Path

import dagster as dg
import pytest

from incomaker_elt.contract.settings import Settings
from incomaker_elt.orchestration.transform import prepare_manifest

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.txt"


def describe(defs: dg.Definitions) -> str:
    graph = defs.resolve_asset_graph()
    lines = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = type(node.partitions_def).__name__ if node.partitions_def else "-"
        kind = "observable source" if node.is_observable else "asset"
        if node.is_external and not node.is_observable:
            kind = "external"
        lines.append(
            f"{kind} {key.to_user_string()} group={node.group_name} partitions={partitions}"
        )
    for check in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        blocking = graph.get_check_spec(check).blocking
        lines.append(f"check {check.to_user_string()}{' blocking' if blocking else ''}")
    for job in sorted(defs.resolve_all_job_defs(), key=lambda job: job.name):
        if job.name.startswith("__"):
            continue
        layer = job.asset_layer
        planned = {
            key
            for handle in job.graph.iterate_node_handles()
            for key in layer.get_selected_entity_keys_for_node(handle)
            if isinstance(key, dg.AssetCheckKey)
        }
        lines.append(
            f"job {job.name}: {len(layer.selected_asset_keys)} assets, "
            f"{len(planned)} planned checks"
        )
    for schedule in sorted(defs.schedules or [], key=lambda s: s.name):
        lines.append(
            f"schedule {schedule.name}: {schedule.cron_schedule} {schedule.execution_timezone} "
            f"-> {schedule.job_name} ({schedule.default_status.value})"
        )
    for sensor in sorted(defs.sensors or [], key=lambda s: s.name):
        lines.append(f"sensor {sensor.name} ({sensor.default_status.value})")
    for name in sorted(defs.resources or {}):
        lines.append(f"resource {name}: {type(defs.resources[name]).__name__}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    root = tmp_path_factory.mktemp("snapshot")
    settings = Settings(
        warehouse_path=root / "warehouse" / "incomaker.duckdb",
        base_url="http://api.invalid",
        api_token="placeholder",
        catalogue_overrides=None,
        dagster_home=root / "dagster_home",
    )
    prepare_manifest()
    from incomaker_elt.orchestration.definitions import build_definitions

    return build_definitions(settings)


def test_the_definitions_are_as_pinned(defs: dg.Definitions) -> None:
    current = describe(defs)
    if os.environ.get("INCOMAKER_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
    pinned = SNAPSHOT.read_text()
    assert current == pinned, (
        "the Dagster definitions changed; review the diff below, and if it is meant, rewrite "
        "the snapshot with INCOMAKER_UPDATE_SNAPSHOTS=1:\n"
        + "\n".join(
            [f"- {line}" for line in sorted(set(pinned.splitlines()) - set(current.splitlines()))]
            + [f"+ {line}" for line in sorted(set(current.splitlines()) - set(pinned.splitlines()))]
        )
    )


def test_the_snapshot_holds_every_kind(defs: dg.Definitions) -> None:
    kinds = {line.split(" ", 1)[0] for line in describe(defs).splitlines()}
    assert {"asset", "check", "job", "schedule", "sensor"} <= kinds
