"""dbt models as Dagster assets, and dbt tests as their asset checks.

The dbt project is described by its manifest, prepared once, never parsed when the definitions
load: `dagster dev` (make ui) re-parses it on start (`prepare_if_dev`), `incomaker-elt run`
parses it before it runs, otherwise `incomaker-elt transform --parse-only` writes it. Loading
the definitions without a manifest fails with that instruction.
"""

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from incomaker_elt.settings import Settings
from incomaker_elt.transform import DBT_PROJECT_DIR, dbt_vars
from orchestration.warehouse import DUCKDB_POOL, exclusive

DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
DBT_PROJECT.prepare_if_dev()

_TRANSLATOR = DagsterDbtTranslator(
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
    query per view on a large warehouse; on ours staging views are cheap to count)."""
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
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        for i, relation in pending:
            (rows,) = con.execute(f"select count(*) from {relation}").fetchone()
            events[i] = events[i].with_metadata(
                {**events[i].metadata, "dagster/row_count": dg.MetadataValue.int(int(rows))}
            )
    finally:
        con.close()
    return events


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
        events: list[Any] = []
        failure: Exception | None = None
        with exclusive(settings.warehouse_path, context.log.info):
            try:
                # With DuckDB, dagster-dbt yields the events once dbt has exited anyway (the
                # row counts need the file), so collecting them first costs nothing.
                for event in (
                    dbt.cli(["build", "--vars", json.dumps(dbt_vars(settings))], context=context)
                    .stream()
                    .fetch_row_counts()
                    .fetch_column_metadata(with_column_lineage=False)
                ):
                    events.append(event)
            except Exception as exc:  # yield what was built and checked, then fail
                failure = exc
            finally:
                release_dbt_duckdb()
            events = with_view_row_counts(events, views, settings.warehouse_path)
        yield from events
        if failure is not None:
            raise failure

    return incomaker_dbt
