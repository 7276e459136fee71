"""Publishing the serving warehouse: the last asset of a run, after the blocking checks passed."""

from collections.abc import Sequence

import dagster as dg

from incomaker_elt.contract.settings import Settings
from incomaker_elt.orchestration.serving import publish_serving_warehouse
from incomaker_elt.orchestration.warehouse import DUCKDB_POOL, exclusive

SERVING_ASSET_KEY = dg.AssetKey(["serving", "incomaker_serving"])


def build_serving_asset(
    settings: Settings, published_models: Sequence[dg.AssetKey]
) -> dg.AssetsDefinition:
    """Depends on every published model, so a failed blocking check on any of them stops it."""

    @dg.asset(
        key=SERVING_ASSET_KEY,
        deps=list(published_models),
        pool=DUCKDB_POOL,
        group_name="serving",
        kinds={"duckdb"},
        description=(
            "Read-only copy of the marts and staging for BI tools, replaced atomically after the "
            "marts are built and the reconciliation checks pass, in a storage format DuckDB 1.x "
            "clients read (INCOMAKER_SERVING_STORAGE_VERSION, docs/serving.md)."
        ),
    )
    def incomaker_serving(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with exclusive(
            settings.warehouse_path,
            context.log.info,
            access="read",
            timeout=settings.warehouse_lock_timeout,
        ):
            published = publish_serving_warehouse(
                settings.warehouse_path,
                settings.serving_warehouse_path,
                run_id=context.run_id,
                storage_version=settings.serving_storage_version,
            )
        context.log.info(
            f"published {len(published.tables)} tables, {published.total_rows} rows, "
            f"to {published.path} (storage format of DuckDB {published.storage_version})"
        )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(published.path)),
                "published_at": dg.MetadataValue.timestamp(published.published_at),
                "tables": dg.MetadataValue.int(len(published.tables)),
                "storage_version": dg.MetadataValue.text(published.storage_version),
                "rows_by_table": dg.MetadataValue.json(published.tables),
                "dagster/row_count": dg.MetadataValue.int(published.total_rows),
            }
        )

    return incomaker_serving
