"""The one Dagster code location of the project: `workspace.yaml` loads `defs` from here.

API operations -> raw tables (dlt) -> staging -> intermediate -> marts (dbt) -> serving warehouse,
with the checks that guard them, the nightly schedule and the run-failure alert. Every piece is
configured from incomaker_elt.contract.settings, the same settings the CLI uses; the API and the
warehouse are resources (incomaker_elt.orchestration.resources), so the UI shows their
configuration (never the token).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dagster as dg

from incomaker_elt.contract.catalogue import CATALOGUE_PATH, Catalogue, load_catalogue
from incomaker_elt.contract.settings import Settings, load_settings
from incomaker_elt.orchestration.alerts import build_run_failure_sensor
from incomaker_elt.orchestration.freshness import build_freshness_checks, build_freshness_sensor
from incomaker_elt.orchestration.ingestion_assets import api_specs, build_raw_assets
from incomaker_elt.orchestration.partitions import daily_partitions
from incomaker_elt.orchestration.publishing import build_serving_asset
from incomaker_elt.orchestration.reconciliation import build_reconciliation_checks
from incomaker_elt.orchestration.resources import api_resource, warehouse_resource
from incomaker_elt.orchestration.schedules import build_nightly_schedule, build_refresh_job
from incomaker_elt.orchestration.serving import SERVED_SCHEMAS
from incomaker_elt.orchestration.transform import DBT_PROJECT, dbt_resource
from incomaker_elt.orchestration.transform_assets import build_dbt_assets


def build_definitions(settings: Settings, catalogue: Catalogue | None = None) -> dg.Definitions:
    catalogue = catalogue or load_catalogue(settings.catalogue_overrides)
    partitions = daily_partitions(settings)
    raw_events, raw_snapshots = build_raw_assets(settings, catalogue, partitions)
    dbt = build_dbt_assets(settings)
    published = [key for key in dbt.keys if key.path[0] in SERVED_SCHEMAS]
    serving = build_serving_asset(settings, published)
    reconciliation = build_reconciliation_checks(catalogue)
    freshness = build_freshness_checks(settings, [raw_events], [raw_snapshots])

    # Runs build, check and publish; freshness is the sensor's business (it watches the clock).
    # The dbt tests run inside the dbt build but stay out of the run's plan
    # (transform_assets.builds_tests_unplanned).
    freshness_keys = [key for checks in freshness for key in checks.check_keys]
    unplanned = [*freshness_keys, *dbt.check_keys]
    refresh = build_refresh_job(dg.AssetSelection.all() - dg.AssetSelection.checks(*unplanned))
    refresh_days = max(op.lookback_days for op in catalogue if op.kind == "event")
    return dg.Definitions(
        assets=[*api_specs(catalogue), raw_events, raw_snapshots, dbt, serving],
        asset_checks=[*reconciliation, *freshness],
        jobs=[refresh],
        schedules=[build_nightly_schedule(refresh, settings, refresh_days)],
        sensors=[build_run_failure_sensor(settings), build_freshness_sensor(settings, freshness)],
        resources={
            "dbt": dbt_resource(),
            "incomaker_api": api_resource(settings),
            "warehouse": warehouse_resource(settings),
        },
    )


FileStamp = tuple[str, int, int] | None


def _stamp(path: Path | None) -> FileStamp:
    """A file as far as a rewrite of it goes: path, modification time and size."""
    if path is None or not path.is_file():
        return None
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=1)
def _definitions_of(settings: Settings, inputs: tuple[FileStamp, ...]) -> dg.Definitions:
    return build_definitions(settings)


@dg.definitions
def defs() -> dg.Definitions:
    """Built when Dagster loads the code location, not on import: tests build their own.

    A code server calls this twice as it loads the location (for the load's context, then for
    the repository): the second call gets the first's Definitions, unless the settings or a file
    they are built from (the catalogue, its overrides, dbt's manifest) changed in between.
    """
    settings = load_settings()
    files = (CATALOGUE_PATH, settings.catalogue_overrides, DBT_PROJECT.manifest_path)
    return _definitions_of(settings, tuple(_stamp(path) for path in files))
