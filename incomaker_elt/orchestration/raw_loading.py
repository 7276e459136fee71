"""Loading the raw assets' tables when their step runs: `load`, the ingestion's one path
(`run_ingestion`) with what Dagster records of it.

Imported by the asset functions of orchestration/ingestion_assets.py when a step runs, not with
the definitions: this module brings dlt and pyarrow, most of a second of every definitions load
that does not load anything (DECISIONS.md, "The raw assets described from the catalogue, not by
dagster-dlt").
"""

from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from typing import Any

import dagster as dg
import dlt
import duckdb
import httpx
from dlt.pipeline.exceptions import PipelineStepFailed

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.contract.columns import snake
from incomaker_elt.contract.settings import Settings
from incomaker_elt.ingestion.errors import ApiUnavailable
from incomaker_elt.ingestion.pipeline import (
    IngestionIncomplete,
    LoadSummary,
    causes,
    ingestion_error,
    make_pipeline,
    run_ingestion,
)
from incomaker_elt.ingestion.source import RunDates
from incomaker_elt.orchestration.freshness import LOADED_THROUGH
from incomaker_elt.orchestration.ingestion_assets import raw_asset_key
from incomaker_elt.orchestration.raw_metadata import (
    add_partition_metadata,
    column_schema,
    day_field,
    days,
    rows_per_day_query,
)
from incomaker_elt.orchestration.resources import IncomakerApi
from incomaker_elt.orchestration.warehouse import exclusive


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
        client = api.client(
            max_in_flight=settings.ingest_concurrency, processes=settings.fetch_processes
        )
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
