"""Running the ingestion: the `incomaker` dlt pipeline into the raw dataset of the warehouse.

`run_ingestion` is what the CLI, the main job and the orchestration call. It checks the token with
one tiny request before anything is created on disk, then runs the generated dlt source and returns
a `LoadSummary`: rows loaded per raw table, requests, retries, time.

dlt keeps its working folder beside the warehouse (settings.dlt_working_dir): deleting the
warehouse folder starts clean, and a machine without the folder restores the pipeline state from
the warehouse itself. A run that died half-way leaves a package that the next run loads first; the
merge keys make that replay idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import dlt
import httpx
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.exceptions import PipelineStepFailed

from incomaker_elt.settings import RAW_DATASET, Settings
from ingestion.catalogue import Catalogue, Operation, default_catalogue
from ingestion.client import IncomakerClient, IngestionError, RetryPolicy
from ingestion.fetch import Fetcher, OperationProgress, Progress
from ingestion.records import arrow_decoder, has_nested_lists, primary_key
from ingestion.source import DEFAULT_CHUNK_ROWS, RunDates, incomaker_source, with_ancestors
from ingestion.values import ValueNote

PIPELINE_NAME = "incomaker"
IN_PROCESS_BASE_URL = "http://incomaker.invalid"
"""Base URL used with an injected transport (tests, the stand-in in-process): never resolved."""

log = logging.getLogger(__name__)


@dataclass
class LoadSummary:
    start: date
    end: date
    operations: dict[str, OperationProgress]
    rows_loaded: dict[str, int]
    """Rows written to each raw table (children included) by this run."""
    table_rows: dict[str, int]
    """Rows each raw table of the selection holds after the run."""
    load_ids: list[str] = field(default_factory=list)
    duplicates_removed: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    requests_by_operation: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    values: list[ValueNote] = field(default_factory=list)
    """Values of loaded operations that did not come as their field's type (ingestion/values.py)."""

    @property
    def total_rows_loaded(self) -> int:
        return sum(self.rows_loaded.values())


def configure_dlt() -> None:
    """dlt settings the source relies on.

    - Arrow tables skip dlt's row normaliser: ask dlt to add `_dlt_load_id` to them anyway.
      `_dlt_id` comes with the tables already (records.row_ids), so dlt can load their parquet
      files as written instead of rewriting each one to add it.
    - One operation at a time (`fifo`), each with its requests in parallel: a listing's pages
      follow each other while the server still holds the query, instead of sixty listings
      interleaved page by page (dlt's round robin) that make it recompute every one.
    """
    dlt.config["normalize.parquet_normalizer.add_dlt_load_id"] = True
    dlt.config["normalize.parquet_normalizer.add_dlt_id"] = False
    dlt.config["extract.next_item_mode"] = "fifo"


def make_pipeline(settings: Settings) -> dlt.Pipeline:
    """The `incomaker` pipeline: DuckDB at settings.warehouse_path unless another is configured."""
    if settings.dlt_destination:
        destination: object = settings.dlt_destination  # configured through dlt's own config
    else:
        settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        destination = dlt.destinations.duckdb(str(settings.warehouse_path))
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=destination,
        dataset_name=RAW_DATASET,
        pipelines_dir=str(settings.dlt_working_dir),
    )


def credentials(
    settings: Settings, transport: httpx.BaseTransport | None = None
) -> tuple[str, str]:
    """The API address and token from settings, else from dlt's config and secrets."""
    base_url = settings.base_url or dlt.config.get("sources.incomaker.base_url", str)
    token = settings.api_token or dlt.secrets.get("sources.incomaker.api_token", str)
    if not base_url:
        if transport is None:
            raise IngestionError(
                "no API address: set INCOMAKER_BASE_URL (for the stand-in, run "
                "`incomaker-elt simulate` and use the address it prints)"
            )
        base_url = IN_PROCESS_BASE_URL
    if not token:
        raise IngestionError(
            "no API token: set INCOMAKER_API_TOKEN (or api_token under [sources.incomaker] in "
            ".dlt/secrets.toml)"
        )
    return base_url, token


def _check_token(client: IncomakerClient, catalogue: Catalogue) -> None:
    """One one-record request, so a bad token or address fails in seconds with nothing written."""
    probe = next(op for op in catalogue if op.parent is None and op.is_paged and not op.params)
    client.get(probe.name, probe.url_path(), {"page": "0", "size": "1"}, arrow_decoder(probe))


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, IngestionError):
            return current
        current = current.__cause__ or current.__context__
    return exc


def remove_duplicates(
    pipeline: dlt.Pipeline, load_ids: Sequence[str], operations: Sequence[Operation]
) -> dict[str, int]:
    """Delete rows of these loads that repeat a key within them; returns the count per table.

    Flat tables are merged without dlt's staging dedup (see source.py). A record repeated within
    one run can only come from a listing that shifted while it was paged; this keeps one copy.
    """
    if not load_ids:
        return {}
    existing = set(pipeline.default_schema.data_table_names(seen_data_only=True))
    loads = ", ".join(f"'{load_id}'" for load_id in load_ids)
    removed: dict[str, int] = {}
    with pipeline.sql_client() as sql:
        for op in operations:
            if op.name not in existing or has_nested_lists(op):
                continue
            table = sql.make_qualified_table_name(op.name)
            keys = ", ".join(sql.escape_column_name(k) for k in primary_key(op))
            repeats = (
                f"select _dlt_id from (select _dlt_id, row_number() over (partition by {keys} "
                f"order by _dlt_id) as copy from {table} where _dlt_load_id in ({loads})) "
                "as numbered where copy > 1"
            )
            with sql.execute_query(f"select count(*) from ({repeats}) as r") as cursor:
                count = int(cursor.fetchone()[0])
            if count:
                sql.execute_sql(f"delete from {table} where _dlt_id in ({repeats})")
                removed[op.name] = count
                log.warning("%s: removed %d repeated records of this run", op.name, count)
    return removed


def _rows_loaded(pipeline: dlt.Pipeline) -> dict[str, int]:
    trace = pipeline.last_trace
    info = trace.last_normalize_info if trace else None
    counts = dict(info.row_counts) if info else {}
    return {t: n for t, n in sorted(counts.items()) if not t.startswith("_dlt")}


def _table_rows(pipeline: dlt.Pipeline, tables: Sequence[str]) -> dict[str, int]:
    existing = set(pipeline.default_schema.data_table_names(seen_data_only=True))
    wanted = [t for t in tables if t in existing]
    result: dict[str, int] = {}
    if not wanted:
        return result
    with pipeline.sql_client() as sql:
        for table in wanted:
            name = sql.make_qualified_table_name(table)
            with sql.execute_query(f"select count(*) from {name}") as cursor:
                result[table] = int(cursor.fetchone()[0])
    return result


def run_ingestion(
    settings: Settings,
    only: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    transport: httpx.BaseTransport | None = None,
    *,
    report: Callable[[str], None] | None = None,
    catalogue: Catalogue | None = None,
    retry: RetryPolicy | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    exclude: Sequence[str] = (),
) -> LoadSummary:
    """Load the selected operations (all by default) into the raw dataset; raise on failure.

    `only` takes operation names or group names; the parents feeding a selected per-id operation
    are loaded too. `start` is where history starts on a first run (default: the partitions start),
    `end` the last day asked for and the snapshot date of aggregates (default: today, UTC).
    `exclude` names operations to leave out of the selection (unless another one needs them).
    """
    started = time.monotonic()
    catalogue = catalogue or default_catalogue()
    dates = RunDates(start=start or settings.partitions_start, end=end or datetime.now(UTC).date())
    if dates.start > dates.end:
        raise IngestionError(f"start date {dates.start} is after end date {dates.end}")
    selected = [op for op in catalogue.select(only) if op.name not in set(exclude)]
    operations = with_ancestors(catalogue, selected)
    base_url, token = credentials(settings, transport)
    progress = Progress(report)
    client = IncomakerClient(
        base_url,
        token,
        transport=transport,
        retry=retry,
        max_in_flight=settings.ingest_concurrency,
        requests_per_second=settings.requests_per_second,
    )
    fetcher = Fetcher(
        client,
        page_size=catalogue.page_size,
        concurrency=settings.ingest_concurrency,
        progress=progress,
    )
    try:
        _check_token(client, catalogue)
        configure_dlt()
        pipeline = make_pipeline(settings)
        source = incomaker_source(catalogue, fetcher, dates, operations, chunk_rows)
        try:
            info: LoadInfo = pipeline.run(source)
        except PipelineStepFailed as exc:
            cause = _root_cause(exc)
            if isinstance(cause, IngestionError):
                raise IngestionError(f"ingestion failed: {cause}") from exc
            raise IngestionError(
                f"ingestion failed in dlt's {exc.step} step: {cause}. Nothing from this run was "
                "committed; run again to resume."
            ) from exc
        removed = remove_duplicates(pipeline, list(info.loads_ids), operations)
        tables = [op.name for op in operations]
        children = [
            t
            for t in pipeline.default_schema.data_table_names()
            if any(t.startswith(f"{name}__") for name in tables)
        ]
        return LoadSummary(
            start=dates.start,
            end=dates.end,
            operations=dict(progress.operations),
            rows_loaded=_rows_loaded(pipeline),
            duplicates_removed=removed,
            table_rows=_table_rows(pipeline, tables + children),
            load_ids=list(info.loads_ids),
            requests=client.requests,
            retries=client.retries,
            requests_by_operation=dict(client.requests_by_operation),
            seconds=time.monotonic() - started,
            values=progress.values.all(),
        )
    finally:
        fetcher.close()
        client.close()
