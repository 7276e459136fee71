"""Raw tables as Dagster assets: one per catalogue operation, loaded by the ingestion's dlt source.

Lineage starts at the API: each operation is an external asset `incomaker_api/<operation>`, the
table it fills is `incomaker_raw/<operation>` (the key the dbt sources declare in
`meta.dagster.asset_key`), then staging and marts follow from dbt.

Two multi-assets share the one dlt source:
- the date-windowed events (`kind: event`, and the per-id operations fed by them) are daily
  partitioned. A run over partitions [first, last] fetches exactly those days: the dlt cursor is
  replaced by a fixed window (dlt's backfill mode), which neither reads nor moves the cursor state.
- everything else is unpartitioned and refreshed by every run; windowed entities keep their dlt
  cursors (with the catalogue's lookback) and aggregates are snapshotted as of the run's last day.

The assets are described from the catalogue alone (`raw_spec`); their steps load through
orchestration/raw_loading.py, imported when a step runs: loading the definitions imports neither
dlt nor pyarrow.
"""

from collections.abc import Iterator

import dagster as dg

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.contract.settings import RAW_DATASET, Settings
from incomaker_elt.orchestration.partitions import (
    last_complete_day,
    last_partition_day,
    window_dates,
)
from incomaker_elt.orchestration.raw_metadata import asset_description, column_schema
from incomaker_elt.orchestration.resources import IncomakerApi
from incomaker_elt.orchestration.warehouse import DUCKDB_POOL

API_GROUP = "incomaker_api"

INGESTION_RETRY = dg.RetryPolicy(
    max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""The client already retries each request; this covers an API outage longer than its patience
and a warehouse briefly locked by a process outside Dagster. Nothing else is retried: a rejected
token, a refused request or a bug would fail the same way again (see `raw_loading._failure`)."""


def raw_asset_key(operation: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_DATASET, operation])


def api_asset_key(operation: str) -> dg.AssetKey:
    return dg.AssetKey([API_GROUP, operation])


def partitioned_operations(catalogue: Catalogue) -> tuple[Operation, ...]:
    """Events and the per-id operations fed by them: one day of events is one partition."""

    def fed_by_event(op: Operation) -> bool:
        while op is not None:
            if op.kind == "event":
                return True
            op = catalogue.get(op.parent.resource) if op.parent else None
        return False

    return tuple(op for op in catalogue if fed_by_event(op))


def api_specs(catalogue: Catalogue) -> list[dg.AssetSpec]:
    """The API's operations as external assets: where each raw table's data comes from."""
    return [
        dg.AssetSpec(
            api_asset_key(op.name),
            group_name=API_GROUP,
            kinds={"api"},
            description=f"{op.title}: `{op.method} {op.path}` ({op.status} in the catalogue)",
            metadata={"path": op.path, "catalogue_status": op.status, "kind": op.kind},
        )
        for op in catalogue
    ]


def raw_spec(op: Operation, catalogue: Catalogue, settings: Settings) -> dg.AssetSpec:
    """The raw table of `op`: the key the dbt sources declare, fed by its API operation, with
    the catalogue's description and columns. What dagster-dlt's spec builder gave, read from the
    catalogue instead of from a dlt source built for it (DECISIONS.md, "The raw assets described
    from the catalogue, not by dagster-dlt")."""
    return dg.AssetSpec(
        raw_asset_key(op.name),
        deps=[api_asset_key(op.name)],
        group_name=RAW_DATASET,
        description=asset_description(op),
        kinds={"dlt", "duckdb"},
        tags={"incomaker/kind": op.kind},
        metadata={
            "dagster/table_name": op.name,
            "dagster/storage_kind": settings.dlt_destination or "duckdb",
            "dagster/column_schema": column_schema(op, catalogue),
        },
    )


def build_raw_assets(
    settings: Settings, catalogue: Catalogue, partitions: dg.DailyPartitionsDefinition
) -> list[dg.AssetsDefinition]:
    """The two raw multi-assets. Their steps import the loading (dlt, pyarrow) when they run."""
    events = partitioned_operations(catalogue)
    others = tuple(op for op in catalogue if op not in events)

    @dg.multi_asset(
        name="incomaker_raw_events",
        specs=[raw_spec(op, catalogue, settings) for op in events],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=True,
        pool=DUCKDB_POOL,
        retry_policy=INGESTION_RETRY,
        description="Date-windowed API operations, one daily partition per day of events.",
    )
    def incomaker_raw_events(
        context: dg.AssetExecutionContext, incomaker_api: IncomakerApi
    ) -> Iterator[dg.MaterializeResult]:
        from incomaker_elt.ingestion.source import RunDates
        from incomaker_elt.orchestration.raw_loading import load

        first, last = window_dates(context.partition_time_window)
        dates = RunDates(first, last, fixed=True)
        yield from load(context, settings, catalogue, events, dates, api=incomaker_api)

    @dg.multi_asset(
        name="incomaker_raw_snapshots",
        specs=[raw_spec(op, catalogue, settings) for op in others],
        can_subset=True,
        pool=DUCKDB_POOL,
        retry_policy=INGESTION_RETRY,
        description=(
            "Entities, details and API aggregates: refreshed by every run, entities incrementally "
            "with the catalogue's lookback, aggregates as of the run's last day."
        ),
    )
    def incomaker_raw_snapshots(
        context: dg.AssetExecutionContext, incomaker_api: IncomakerApi
    ) -> Iterator[dg.MaterializeResult]:
        from incomaker_elt.ingestion.source import RunDates
        from incomaker_elt.orchestration.raw_loading import load

        # The run's partition (range) end, else the source's last complete day.
        last = last_partition_day(context.run.tags) or last_complete_day(settings)
        dates = RunDates(settings.partitions_start, last)
        yield from load(context, settings, catalogue, others, dates, api=incomaker_api)

    return [incomaker_raw_events, incomaker_raw_snapshots]
