"""dbt models as Dagster assets, and dbt tests as their asset checks.

The dbt project is described by its manifest, prepared once, never parsed when the definitions
load: `dagster dev` (make ui) re-parses it on start (`prepare_if_dev`), `incomaker-elt run`
parses it before it runs, otherwise `incomaker-elt transform --parse-only` writes it. Loading
the definitions without a manifest fails with that instruction.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)
from dagster_shared import record

from incomaker_elt.contract.settings import Settings
from incomaker_elt.orchestration.transform import DBT_PROJECT, run_dbt
from incomaker_elt.orchestration.warehouse import DUCKDB_POOL, WarehouseBusy, connect

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


_COUNT_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Model:
    """Where a dbt model is built and the descriptions of its documented columns."""

    schema: str
    alias: str
    descriptions: dict[str, str]

    @property
    def relation(self) -> str:
        return f'"{self.schema}"."{self.alias}"'


def _models(manifest: Mapping[str, Any]) -> dict[str, Model]:
    """Every model of the manifest, by unique id."""
    nodes = manifest["nodes"]
    return {
        unique_id: Model(
            node["schema"],
            node["alias"],
            {
                n: c["description"]
                for n, c in node.get("columns", {}).items()
                if c.get("description")
            },
        )
        for unique_id, node in nodes.items()
        if node["resource_type"] == "model"
    }


def with_table_metadata(
    events: list[Any], models: Mapping[str, Model], warehouse_path: Path
) -> list[Any]:
    """Add each built model's `dagster/column_schema` (its columns as the warehouse has them, with
    the project's descriptions) and, for tables, its `dagster/row_count`, over one connection.

    dagster-dbt's `fetch_row_counts` and `fetch_column_metadata` open a dbt connection and run a
    query per model in threads: 10 s of a 62 s first `make run` on a quiet machine, for 103
    models. Views are not counted, as dagster-dbt does not count them: counting one computes it.
    On the `large` warehouse after five nights that was 18.5 s of every night for the 78 views
    (5.8 s for `stg_incomaker__order_recommendation`), against 0.01 s for the 25 tables.
    """
    pending = [
        (i, models[event.metadata["unique_id"].value])
        for i, event in enumerate(events)
        if isinstance(event, dg.Output | dg.AssetMaterialization)
        and "unique_id" in event.metadata
        and event.metadata["unique_id"].value in models
    ]
    if not pending or not warehouse_path.is_file():
        return events
    try:
        con = connect(warehouse_path, read_only=True, timeout=_COUNT_WAIT_SECONDS)
    except WarehouseBusy:
        return events  # metadata is a courtesy: it never fails the build
    with con:
        tables = set(
            con.execute(
                "select schema_name, table_name from duckdb_tables() "
                "where database_name = current_database()"
            ).fetchall()
        )
        columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for schema, table, column, data_type in con.execute(
            "select schema_name, table_name, column_name, data_type from duckdb_columns() "
            "where database_name = current_database() order by column_index"
        ).fetchall():
            columns.setdefault((schema, table), []).append((column, data_type))
        for i, model in pending:
            metadata = dict(events[i].metadata)
            if found := columns.get((model.schema, model.alias)):
                metadata["dagster/column_schema"] = dg.TableSchema(
                    columns=[
                        dg.TableColumn(name, data_type, model.descriptions.get(name))
                        for name, data_type in found
                    ]
                )
            if (model.schema, model.alias) in tables:
                (rows,) = con.execute(f"select count(*) from {model.relation}").fetchone()
                metadata["dagster/row_count"] = dg.MetadataValue.int(int(rows))
            events[i] = events[i].with_metadata(metadata)
    return events


def builds_tests_unplanned(context: dg.AssetExecutionContext) -> bool:
    """Whether this step builds every model with none of the dbt checks in the run's plan.

    That is the refresh job, which leaves the dbt tests out of its plan. Dagster marks every
    check a run planned and never evaluated as "Execution failed" once the run has failed,
    although it never ran: after a failed load all ~200 dbt checks turned red. Left out of the
    plan, a dbt test that runs is recorded as an evaluation all the same, and one that does not
    run (its step skipped, or its model skipped by dbt) keeps showing its last result.
    """
    selected = set(context.selected_asset_keys)
    return not context.selected_asset_check_keys and selected == set(context.assets_def.keys)


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

    # Read once, here: dagster-dbt takes the parsed manifest as well as its path.
    manifest = json.loads(DBT_PROJECT.manifest_path.read_bytes())
    models = _models(manifest)

    @dbt_assets(
        manifest=manifest,
        project=DBT_PROJECT,
        name="incomaker_dbt",
        dagster_dbt_translator=_TRANSLATOR,
        pool=DUCKDB_POOL,
    )
    def incomaker_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        unplanned = builds_tests_unplanned(context)

        def invoke(args: list[str], target: Path) -> Any:
            if unplanned:  # the whole project, tests included, reported as evaluations
                return dbt.cli(
                    args,
                    manifest=DBT_PROJECT.manifest_path,
                    dagster_dbt_translator=_TRANSLATOR,
                    target_path=target,
                )
            return dbt.cli(args, context=context, target_path=target)

        def read(invocation: Any) -> Iterator[Any]:
            return invocation.stream()

        run = run_dbt(
            settings,
            ["build"],
            invoke=invoke,
            read=read,
            run_id=context.run.run_id,
            log=context.log.info,
            then=lambda events: with_table_metadata(events, models, settings.warehouse_path),
        )
        events = as_step_events(run.events, context.assets_def) if unplanned else run.events
        targets: dict[dg.AssetKey, AssetCheckEvaluationTargetMaterializationData | None] = {}
        for event in events:
            if isinstance(event, dg.AssetCheckEvaluation):
                event = on_latest_materialization(event, context.instance, targets)
            yield event
        if run.error is not None:
            raise run.error

    return incomaker_dbt
