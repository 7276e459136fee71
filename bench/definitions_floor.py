"""The floor under the code location's load time: only what issue 11 requires of dagster-dbt.

dagster-dbt's `@dbt_assets` over the project's manifest (with the translator settings the
project's dbt assets need: dbt tests as checks, dlt's child tables' sources sharing their parent's
key) and its `DbtCliResource`: no raw assets, checks, jobs, schedules or sensors.
bench/definitions_load.py --floor loads it as it loads the project's definitions, so that the two
compare: whatever this takes, the project's definitions cannot take less.
"""

import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

PROJECT = DbtProject(Path(__file__).resolve().parent.parent / "dbt_project")
TRANSLATOR = DagsterDbtTranslator(
    settings=DagsterDbtTranslatorSettings(
        enable_asset_checks=True, enable_duplicate_source_asset_keys=True
    )
)


@dg.definitions
def defs() -> dg.Definitions:
    @dbt_assets(manifest=PROJECT.manifest_path, project=PROJECT, dagster_dbt_translator=TRANSLATOR)
    def models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt.cli(["build"], context=context).stream()

    # the dbt `make install` puts in .venv/dbt (incomaker_elt.orchestration.transform), without
    # importing the project
    executable = Path(sys.prefix) / "dbt" / "bin" / "dbt"
    return dg.Definitions(
        assets=[models],
        resources={
            "dbt": DbtCliResource(project_dir=PROJECT, dbt_executable=str(executable)),
        },
    )
