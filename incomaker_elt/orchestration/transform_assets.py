"""dbt models as Dagster assets, and dbt tests as their asset checks.

The dbt project is described by its manifest, prepared once, never parsed when the definitions
load: `dagster dev` (make ui) re-parses it on start (`prepare_if_dev`), `incomaker-elt run`
parses it before it runs, otherwise `incomaker-elt transform --parse-only` writes it. Loading
the definitions without a manifest fails with that instruction.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from dagster_shared import record

from incomaker_elt.contract.settings import Settings

try:
    import fcntl
except ImportError:  # Windows: finished builds' folders are still removed, failed ones stay
    fcntl = None  # type: ignore[assignment]
from incomaker_elt.orchestration.transform import DBT_PROJECT_DIR, DBT_TARGET_DIR, dbt_vars
from incomaker_elt.orchestration.warehouse import (
    DUCKDB_POOL,
    WarehouseBusy,
    connect,
    exclusive,
    is_lock_conflict,
    retry_while_locked,
)

DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
DBT_PROJECT.prepare_if_dev()

LAYERS = ("staging", "intermediate", "marts")
"""The dbt layers, each built into the schema of its name (dbt_project.yml)."""


class LayerTranslator(DagsterDbtTranslator):
    """Puts each dbt model in the Dagster group of its layer: staging, intermediate or marts.

    By layer rather than by domain: the layer is the schema a user queries and the first part of
    the asset key (`marts/fct_conversions` is in group `marts`), so the groups line up with the
    other stages' groups (`incomaker_api`, `incomaker_raw`, `serving`) and the graph reads left to
    right by group. Domains cut across layers unevenly (staging has campaigns, products and
    segments, the marts a `core`), so a domain group would mix views and tables. A model can
    still name its own group with `meta: dagster: group:`.
    """

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        configured = super().get_group_name(dbt_resource_props)
        if configured:
            return configured
        schema = dbt_resource_props.get("config", {}).get("schema")
        return schema if schema in LAYERS else None


_TRANSLATOR = LayerTranslator(
    settings=DagsterDbtTranslatorSettings(
        enable_asset_checks=True,
        # dlt's child tables (orders__items) are dbt sources of their own that carry their parent
        # table's asset key: the raw asset stands for the table and its children.
        enable_duplicate_source_asset_keys=True,
    )
)


class ManifestMissing(RuntimeError):
    pass


DBT_EXECUTABLE = Path(sys.executable).with_name("dbt")
"""The dbt beside this Python: `.venv/bin/incomaker-elt` does not put .venv/bin on PATH."""


def dbt_resource() -> DbtCliResource:
    executable = str(DBT_EXECUTABLE) if DBT_EXECUTABLE.exists() else "dbt"
    return DbtCliResource(
        project_dir=DBT_PROJECT, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=executable
    )


def release_dbt_duckdb() -> None:
    """Close the warehouse that dbt's DuckDB adapter keeps open in this process.

    Row counts and column schemas are read through the adapter, which holds the database open
    read-only with the profile's settings until the process ends. Later steps of an in-process run
    (checks, publishing) could then not open it at all: DuckDB refuses a second configuration.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if environment is not None:
        environment.close()


RUN_TARGETS_DIR = DBT_TARGET_DIR / "runs"
"""Where each dbt build of a Dagster run writes its artefacts (compiled SQL, run results, log):
~16 MB a run. A successful build's folder is removed once its events are out; a failed one stays
(its log is named in the error) until the next build starts."""

_IN_USE = ".in-use"
_YOUNG_SECONDS = 60.0
_LEGACY_SECONDS = 3600.0
_DAGSTER_DEFAULT_TARGET = re.compile(r"^incomaker_dbt-[0-9a-f]{7}-[0-9a-f]{7}$")
"""The per-run folders dagster-dbt makes in target/ when given no target path (before runs/)."""


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_if_unused(path: Path) -> bool:
    """Delete a build's folder unless a build holds its `.in-use` lock (it may be another
    warehouse's build in this same project folder)."""
    marker = path / _IN_USE
    if not marker.exists():
        if _age(path) < _YOUNG_SECONDS:  # just made; its builder is about to lock it
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    if fcntl is None:
        return False
    try:
        handle = open(marker, "a+")  # noqa: SIM115 - held while the folder is removed
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(path, ignore_errors=True)
    return True


def remove_old_run_targets(target_dir: Path = DBT_TARGET_DIR) -> int:
    """Delete earlier builds' artefact folders that no build is using; returns how many.

    The manifest and partial-parse files in target/ itself stay: Dagster and dbt read them.
    """
    removed = 0
    for path in sorted((target_dir / "runs").glob("*")):
        if path.is_dir() and _remove_if_unused(path):
            removed += 1
    for path in target_dir.glob("incomaker_dbt-*"):
        if _DAGSTER_DEFAULT_TARGET.match(path.name) and _age(path) > _LEGACY_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


@contextmanager
def run_target(run_id: str, target_dir: Path = DBT_TARGET_DIR) -> Iterator[Path]:
    """A new folder for one dbt build's artefacts, marked in use while the build runs.

    It starts with the partial-parse file of the prepared manifest (same project, vars and
    profile), so dbt need not parse the whole project again: a few seconds less per build.
    """
    path = target_dir / "runs" / f"{run_id[:8]}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    partial_parse = target_dir / "partial_parse.msgpack"
    if partial_parse.is_file():
        shutil.copy2(partial_parse, path / partial_parse.name)
    with open(path / _IN_USE, "w") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield path


_DBT_STOP_SECONDS = 30.0
_COUNT_WAIT_SECONDS = 30.0


def stop_dbt(process: subprocess.Popen) -> None:
    """End a dbt whose events are no longer read: left running it keeps the warehouse open
    (and soon blocks on its full output pipe), so no later step could open the file."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_DBT_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _view_relations(manifest_path: Path) -> dict[str, str]:
    """`schema.name` of every model dbt builds as a view, by unique id."""
    nodes = json.loads(manifest_path.read_text())["nodes"]
    return {
        unique_id: f'"{node["schema"]}"."{node["alias"]}"'
        for unique_id, node in nodes.items()
        if node["resource_type"] == "model" and node["config"].get("materialized") == "view"
    }


def with_view_row_counts(
    events: list[Any], views: dict[str, str], warehouse_path: Path
) -> list[Any]:
    """Add `dagster/row_count` to views, for which dagster-dbt counts nothing (it would cost a
    query per view on a large warehouse; on ours staging views are cheap to count).

    A view whose rows cannot be read (a cast that fails on a value, which dbt's tests report)
    gets no count: the count must not replace dbt's own failure as the step's error."""
    pending = [
        (i, views[event.metadata["unique_id"].value])
        for i, event in enumerate(events)
        if isinstance(event, dg.Output | dg.AssetMaterialization)
        and "unique_id" in event.metadata
        and event.metadata["unique_id"].value in views
        and "dagster/row_count" not in event.metadata
    ]
    if not pending or not warehouse_path.is_file():
        return events
    try:
        con = connect(warehouse_path, read_only=True, timeout=_COUNT_WAIT_SECONDS)
    except WarehouseBusy:
        return events  # counts are a courtesy: they never fail the build
    try:
        for i, relation in pending:
            try:
                (rows,) = con.execute(f"select count(*) from {relation}").fetchone()
            except duckdb.Error:
                continue
            events[i] = events[i].with_metadata(
                {**events[i].metadata, "dagster/row_count": dg.MetadataValue.int(int(rows))}
            )
    finally:
        con.close()
    return events


def builds_tests_unplanned(context: dg.AssetExecutionContext) -> bool:
    """Whether this step builds every model with none of the dbt checks in the run's plan.

    That is the refresh job (`unplanned_dbt_checks`). Dagster marks every check a run planned
    and never evaluated as "Execution failed" once the run has failed, although it never ran:
    after a failed load all ~200 dbt checks turned red. Left out of the plan, a dbt test that
    runs is recorded as an evaluation all the same, and one that does not run (its step skipped,
    or its model skipped by dbt) keeps showing its last result.
    """
    assets_def = context.assets_def
    return not context.selected_asset_check_keys and set(context.selected_asset_keys) == set(
        assets_def.keys
    )


def unplanned_dbt_checks(dbt: dg.AssetsDefinition) -> set[dg.AssetCheckKey]:
    """The dbt tests, which the refresh job leaves out of its plan (`builds_tests_unplanned`)."""
    return set(dbt.check_keys)


def as_step_events(events: list[Any], assets_def: dg.AssetsDefinition) -> list[Any]:
    """dbt's events of a build invoked without the step's context, as the step yields them.

    Models come as materialisations: they become the step's outputs, so that the steps below
    them (publishing) run. Tests come as check evaluations: they get the blocking flag of
    their check, so that a failed `error` test still fails the step as a planned check would.
    """
    specs = {spec.key: spec for spec in assets_def.check_specs}
    converted: list[Any] = []
    for event in events:
        if isinstance(event, dg.AssetMaterialization) and event.asset_key in assets_def.keys:
            output = assets_def.get_output_name_for_asset_key(event.asset_key)
            converted.append(dg.Output(None, output_name=output, metadata=event.metadata))
        elif isinstance(event, dg.AssetCheckEvaluation) and event.asset_check_key in specs:
            converted.append(record.copy(event, blocking=specs[event.asset_check_key].blocking))
        else:
            converted.append(event)
    return converted


def on_latest_materialization(
    evaluation: dg.AssetCheckEvaluation,
    instance: dg.DagsterInstance,
    targets: dict[dg.AssetKey, AssetCheckEvaluationTargetMaterializationData | None],
) -> dg.AssetCheckEvaluation:
    """The evaluation, pointing at the materialisation of its model it checked.

    Dagster adds that pointer to a planned check's result itself. Without it the UI compares
    timestamps, and the check's row is stamped to the whole second: a test evaluated within the
    second its model was built would look older than the model ("not evaluated" on the latest
    materialisation). Called as the step yields the evaluation, after its model's output, so the
    latest materialisation is this build's; one lookup per model.
    """
    if evaluation.target_materialization_data is not None:
        return evaluation
    key = evaluation.asset_key
    if key not in targets:
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1)
        latest = records.records[0] if records.records else None
        targets[key] = (
            AssetCheckEvaluationTargetMaterializationData(
                storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
            )
            if latest is not None
            else None
        )
    return record.copy(evaluation, target_materialization_data=targets[key])


def build_dbt_assets(settings: Settings) -> dg.AssetsDefinition:
    if not DBT_PROJECT.manifest_path.is_file():
        raise ManifestMissing(
            f"dbt manifest {DBT_PROJECT.manifest_path} is missing: run "
            "`incomaker-elt transform --parse-only` once, then load the definitions again"
        )

    views = _view_relations(DBT_PROJECT.manifest_path)

    @dbt_assets(
        manifest=DBT_PROJECT.manifest_path,
        project=DBT_PROJECT,
        name="incomaker_dbt",
        dagster_dbt_translator=_TRANSLATOR,
        pool=DUCKDB_POOL,
    )
    def incomaker_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        # The profile reads the warehouse from INCOMAKER_WAREHOUSE; pin it to the settings' path.
        os.environ["INCOMAKER_WAREHOUSE"] = str(settings.warehouse_path)
        args = ["build", "--vars", json.dumps(dbt_vars(settings))]

        unplanned = builds_tests_unplanned(context)

        def build() -> list[Any]:
            """One dbt build; its events, or the build's exception with the events so far."""
            events: list[Any] = []
            with run_target(context.run.run_id) as target:
                if unplanned:  # the whole project, tests included, reported as evaluations
                    invocation = dbt.cli(
                        args,
                        manifest=DBT_PROJECT.manifest_path,
                        dagster_dbt_translator=_TRANSLATOR,
                        target_path=target,
                    )
                else:
                    invocation = dbt.cli(args, context=context, target_path=target)
                try:
                    # With DuckDB, dagster-dbt yields the events once dbt has exited anyway (the
                    # row counts need the file), so collecting them first costs nothing.
                    for event in (
                        invocation.stream()
                        .fetch_row_counts()
                        .fetch_column_metadata(with_column_lineage=False)
                    ):
                        events.append(event)
                except Exception as exc:
                    if events:  # something was built: yield it, then fail
                        return [*events, exc]
                    if is_lock_conflict(exc):  # dbt never opened the file: nothing to look at
                        shutil.rmtree(target, ignore_errors=True)
                    raise  # retried while it is the lock
                finally:
                    stop_dbt(invocation.process)  # before any retry and before counting views
                    release_dbt_duckdb()
                shutil.rmtree(target, ignore_errors=True)
            return events

        with exclusive(
            settings.warehouse_path, context.log.info, timeout=settings.warehouse_lock_timeout
        ):
            remove_old_run_targets()
            events = retry_while_locked(
                build,
                settings.warehouse_path,
                timeout=settings.warehouse_lock_timeout,
                log=context.log.info,
            )
            failure = events.pop() if events and isinstance(events[-1], Exception) else None
            if unplanned:
                events = as_step_events(events, context.assets_def)
            if failure is None:  # a failed build's views may not be readable: dbt says why
                events = with_view_row_counts(events, views, settings.warehouse_path)
        targets: dict[dg.AssetKey, AssetCheckEvaluationTargetMaterializationData | None] = {}
        for event in events:
            if isinstance(event, dg.AssetCheckEvaluation):
                event = on_latest_materialization(event, context.instance, targets)
            yield event
        if failure is not None:
            raise failure

    return incomaker_dbt
