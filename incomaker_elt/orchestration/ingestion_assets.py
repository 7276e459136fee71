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
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import dagster as dg
import dlt
import duckdb
import httpx
from dagster_dlt import DagsterDltTranslator
from dagster_dlt.asset_decorator import build_dlt_asset_specs
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.extract.source import DltSource
from dlt.pipeline.exceptions import PipelineStepFailed

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.contract.columns import snake
from incomaker_elt.contract.settings import RAW_DATASET, Settings
from incomaker_elt.ingestion.client import ApiUnavailable, IncomakerClient
from incomaker_elt.ingestion.fetch import Fetcher
from incomaker_elt.ingestion.pipeline import (
    IngestionIncomplete,
    LoadSummary,
    causes,
    ingestion_error,
    make_pipeline,
    run_ingestion,
)
from incomaker_elt.ingestion.source import RunDates, incomaker_source
from incomaker_elt.orchestration.freshness import LOADED_THROUGH
from incomaker_elt.orchestration.partitions import (
    last_complete_day,
    last_partition_day,
    window_dates,
)
from incomaker_elt.orchestration.raw_metadata import (
    add_partition_metadata,
    asset_description,
    column_schema,
    day_field,
    days,
    rows_per_day_query,
)
from incomaker_elt.orchestration.resources import IncomakerApi
from incomaker_elt.orchestration.warehouse import DUCKDB_POOL, exclusive

API_GROUP = "incomaker_api"

INGESTION_RETRY = dg.RetryPolicy(
    max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""The client already retries each request; this covers an API outage longer than its patience
and a warehouse briefly locked by a process outside Dagster. Nothing else is retried: a rejected
token, a refused request or a bug would fail the same way again (see `_failure`)."""

_DEFINITIONS_ONLY_URL = "http://definitions.invalid"
"""The source built for the asset definitions is never iterated, so its client never connects."""


def _no_request(request: httpx.Request) -> httpx.Response:
    raise RuntimeError(
        f"the dlt source built for the asset definitions was asked for {request.url}: it only "
        "describes the raw tables; runs load them through `load` with the API resource's client"
    )


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


@dataclass
class IncomakerDltTranslator(DagsterDltTranslator):
    """Raw keys equal the dbt sources' `meta.dagster.asset_key`, so lineage is one graph."""

    catalogue: Catalogue | None = None

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        assert self.catalogue is not None
        op = self.catalogue.get(data.resource.name)
        return spec.replace_attributes(
            key=raw_asset_key(op.name),
            deps=[api_asset_key(op.name)],
            group_name=RAW_DATASET,
            description=asset_description(op),
            kinds={"dlt", "duckdb"},
            tags={"incomaker/kind": op.kind},
            metadata={
                **spec.metadata,
                "dagster/column_schema": column_schema(op, self.catalogue),
            },
        )


# --------------------------------------------------------------------------------- execution


def _is_transient(exc: BaseException) -> bool:
    transient = ApiUnavailable | httpx.TransportError | duckdb.IOException
    return any(isinstance(cause, transient) for cause in causes(exc))


def _failure(exc: BaseException) -> dg.Failure:
    """A Failure naming the cause; retried (by INGESTION_RETRY) only when it is transient."""
    cause = ingestion_error(exc)
    if isinstance(exc, PipelineStepFailed) and cause is None:
        message = (
            f"ingestion failed in dlt's {exc.step} step: {exc}. Pending load packages are "
            "completed, or dropped and fetched again, by the next run."
        )
    else:
        message = f"ingestion failed: {cause or exc}"
    return dg.Failure(message, allow_retries=_is_transient(exc))


def _families_failure(outcome: LoadSummary, selected: set[str]) -> dg.Failure:
    """The step's failure after the loaded tables materialised: which failed, which did not."""
    failed = "\n".join(f"- {failure.describe()}" for failure in outcome.failures)
    loaded = sorted(set(outcome.loaded_operations) & selected)
    message = (
        f"{len(outcome.failed_operations)} operation(s) failed; "
        f"{len(loaded)} raw table(s) were loaded and materialised "
        f"({', '.join(loaded) or 'none'}). Failed:\n{failed}"
    )
    transient = any(
        failure.error is not None and _is_transient(failure.error) for failure in outcome.failures
    )
    return dg.Failure(
        message,
        metadata={"failed_operations": ", ".join(outcome.failed_operations)},
        allow_retries=transient,
    )


WarehouseColumns = dict[str, list[tuple[str, str, bool]]]


def _warehouse_columns(pipeline: dlt.Pipeline) -> WarehouseColumns:
    """Every raw table's columns as the warehouse holds them (name, type, nullable), one query."""
    columns: WarehouseColumns = {}
    with (
        pipeline.sql_client() as sql,
        sql.execute_query(
            "select table_name, column_name, data_type, is_nullable = 'YES' "
            "from information_schema.columns where table_schema = %s "
            "order by table_name, ordinal_position",
            sql.dataset_name,
        ) as cursor,
    ):
        for table, column, kind, nullable in cursor.fetchall():
            columns.setdefault(table, []).append((column, kind, bool(nullable)))
    return columns


def _rows_per_day(
    pipeline: dlt.Pipeline,
    catalogue: Catalogue,
    tables: Sequence[str],
    first: date,
    last: date,
    warn: Any,
) -> dict[str, dict[date, int]]:
    """Rows each table holds per day of [first, last]: one GROUP BY per table on its day column.

    A table without a day column, or whose day column cannot be read as one, gets no per-day count
    (and a warning) rather than the window's total on every day.
    """
    counts: dict[str, dict[date, int]] = {}
    after_last = last + timedelta(days=1)
    with pipeline.sql_client() as sql:
        for table in tables:
            op = catalogue.get(table)
            field = day_field(op, catalogue)
            if field is None:
                warn(f"{table}: no day column in its catalogue entry; no rows per partition")
                continue
            query = rows_per_day_query(
                sql.make_qualified_table_name(table), snake(field), op.fields[field]
            )
            try:
                with sql.execute_query(query, first, after_last) as cursor:
                    found = {day: int(n) for day, n in cursor.fetchall()}
            except Exception as exc:  # a column typed otherwise by an override: count nothing
                warn(f"{table}: rows per day not counted on {snake(field)} ({exc})")
                continue
            counts[table] = {day: found.get(day, 0) for day in days(first, last)}
    return counts


def load(
    context: dg.AssetExecutionContext,
    settings: Settings,
    catalogue: Catalogue,
    operations: Sequence[Operation],
    dates: RunDates,
    *,
    api: IncomakerApi,
) -> Iterator[dg.MaterializeResult]:
    """Load the selected `operations` by the ingestion's one path (`run_ingestion`, as
    `incomaker-elt ingest` does); one materialisation per loaded table.

    Families that fail do not stop the others: every loaded table materialises, then the step
    fails with a message naming the failed operations, so nothing downstream of them is rebuilt
    from a table that did not change.
    """
    selected = {
        op.name for op in operations if raw_asset_key(op.name) in context.selected_asset_keys
    }
    try:
        client = api.client(max_in_flight=settings.ingest_concurrency)
        with exclusive(settings.warehouse_path, context.log.info):
            try:
                summary = run_ingestion(
                    settings,
                    start=dates.start,
                    end=dates.end,
                    report=context.log.info,
                    catalogue=catalogue,
                    operations=[op for op in operations if op.name in selected],
                    client=client,
                    fixed_window=dates.fixed,
                )
            except IngestionIncomplete as incomplete:  # the loaded tables still materialise
                summary = incomplete.summary
            loaded = [name for name in summary.loaded_operations if name in selected]
            pipeline = make_pipeline(settings)
            columns = _warehouse_columns(pipeline)
            per_day = (
                _rows_per_day(
                    pipeline, catalogue, loaded, dates.start, dates.end, context.log.warning
                )
                if dates.fixed
                else {}
            )
    except Exception as exc:
        raise _failure(exc) from exc
    if summary.leftovers.any:
        context.log.warning(f"earlier runs: {summary.leftovers.describe()}")
    context.log.info(
        f"loaded {dates.start}..{dates.end}: {summary.requests} requests, {summary.retries} retries"
    )
    schemas = {table: column_schema(catalogue.get(table), catalogue, columns) for table in loaded}
    # Each day's materialisation carries the rows the table holds for that day; the columns go
    # on the last day's only, the one the UI shows: on each of a first load's 7,257 events they
    # took three quarters of its serialisation (0.9 ms of 1.2 ms an event).
    by_partition: dict[tuple[dg.AssetKey, str], dict[str, Any]] = {
        (raw_asset_key(table), day.isoformat()): {
            "dagster/partition_row_count": dg.MetadataValue.int(rows)
        }
        for table, by_day in per_day.items()
        for day, rows in by_day.items()
    }
    if dates.fixed:
        for table, schema in schemas.items():
            last_day = by_partition.setdefault((raw_asset_key(table), dates.end.isoformat()), {})
            last_day["dagster/column_schema"] = schema
    add_partition_metadata(context, by_partition)
    for table in loaded:
        metadata: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(summary.table_rows.get(table, 0)),
            **({} if dates.fixed else {"dagster/column_schema": schemas[table]}),
            "rows_loaded": dg.MetadataValue.int(summary.rows_loaded.get(table, 0)),
            "window": f"{dates.start}..{dates.end}",
            **({} if dates.fixed else {LOADED_THROUGH: dates.end.isoformat()}),
            "load_ids": ", ".join(summary.load_ids),
        }
        notes = [note for note in summary.values if note.operation == table]
        if notes:
            # Values that did not come as their field's type: kept exactly, and the override.
            context.log.warning("\n".join(note.describe() for note in notes))
            metadata["values_not_as_typed"] = dg.MetadataValue.md(
                "\n".join(f"- {note.describe()}" for note in notes)
            )
        yield dg.MaterializeResult(asset_key=raw_asset_key(table), metadata=metadata)
    if summary.failures:
        raise _families_failure(summary, selected)


def _definition_sources(
    settings: Settings, catalogue: Catalogue, *selections: Sequence[Operation]
) -> list[DltSource]:
    """A dlt source of each selection of operations, for their asset specs only.

    One client serves them all, with a transport that refuses any request: a default one would
    load the system's certificates for HTTPS, a tenth of a second the definitions' load has no
    use for.
    """
    client = IncomakerClient(
        _DEFINITIONS_ONLY_URL, "definitions-only", transport=httpx.MockTransport(_no_request)
    )
    fetcher = Fetcher(client, page_size=catalogue.page_size, concurrency=1)
    dates = RunDates(settings.partitions_start, settings.partitions_start)
    sources = []
    for operations in selections:
        source = incomaker_source(catalogue, fetcher, dates, operations)
        # Selected in place (the source includes the parents that feed the operations):
        # `with_resources` would clone the source and its schema for nothing.
        source.resources.select(*(op.name for op in operations))
        sources.append(source)
    return sources


def build_raw_assets(
    settings: Settings, catalogue: Catalogue, partitions: dg.DailyPartitionsDefinition
) -> list[dg.AssetsDefinition]:
    translator = IncomakerDltTranslator(catalogue=catalogue)
    events = partitioned_operations(catalogue)
    others = tuple(op for op in catalogue if op not in events)
    event_source, other_source = _definition_sources(settings, catalogue, events, others)
    dlt_pipeline = make_pipeline(settings)

    @dg.multi_asset(
        name="incomaker_raw_events",
        specs=build_dlt_asset_specs(event_source, dlt_pipeline, translator),
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
        first, last = window_dates(context.partition_time_window)
        dates = RunDates(first, last, fixed=True)
        yield from load(context, settings, catalogue, events, dates, api=incomaker_api)

    @dg.multi_asset(
        name="incomaker_raw_snapshots",
        specs=build_dlt_asset_specs(other_source, dlt_pipeline, translator),
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
        # The run's partition (range) end, else the source's last complete day.
        last = last_partition_day(context.run.tags) or last_complete_day(settings)
        dates = RunDates(settings.partitions_start, last)
        yield from load(context, settings, catalogue, others, dates, api=incomaker_api)

    return [incomaker_raw_events, incomaker_raw_snapshots]
