"""Running the ingestion: the `incomaker` dlt pipeline into the raw dataset of the warehouse.

`run_ingestion` is the one way to load: `incomaker-elt ingest` and the raw assets of the Dagster
definitions (orchestration/ingestion_assets.py) both call it. It checks the token with
one tiny request before anything is created on disk, then loads the operations family by family
(`load_families`) and returns a `LoadSummary`: rows loaded per raw table, requests, retries, time,
the operations that failed and why, and what it did with packages an earlier run left.

One bad operation never stops the others: a family (a top-level operation and the per-id
operations it feeds) is extracted, normalised and loaded on its own. A family whose fetch fails
leaves no package and its dlt state (cursors, fingerprints) does not move; a family whose load
fails has its package aborted, which rewinds its state, so its data is fetched again next time.

dlt keeps its working folder beside the warehouse (settings.dlt_working_dir): deleting the
warehouse folder starts clean, and a machine without the folder restores the pipeline state from
the warehouse itself. A run that died half-way leaves packages that the next run completes (or,
when they cannot load, drops and fetches again) before it fetches anything: see recovery.py.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import dlt
import httpx
from dlt.destinations.exceptions import DatabaseException
from dlt.extract.source import DltSource
from dlt.pipeline.exceptions import PipelineStepFailed

from incomaker_elt.contract.catalogue import Catalogue, Operation, default_catalogue
from incomaker_elt.contract.settings import NO_API_ADDRESS, NO_API_TOKEN, RAW_DATASET, Settings
from incomaker_elt.ingestion.client import ApiClient, RetryPolicy, whole_body
from incomaker_elt.ingestion.client_process import api_client
from incomaker_elt.ingestion.errors import IngestionError, RequestRejected
from incomaker_elt.ingestion.fetch import Fetcher, OperationProgress, Progress
from incomaker_elt.ingestion.recovery import (
    Leftovers,
    LoadFailed,
    existing_tables,
    load_pending,
    settle_leftovers,
)
from incomaker_elt.ingestion.source import (
    DEFAULT_CHUNK_ROWS,
    RunDates,
    incomaker_source,
    with_ancestors,
)
from incomaker_elt.ingestion.values import ValueNote

PIPELINE_NAME = "incomaker"
LOADER_FILE_FORMAT = "parquet"
"""What dlt writes the dict path's records to (incomaker_elt/ingestion/records.py; the Arrow path
writes parquet anyway). dlt's default for DuckDB, `insert_values`, loads one INSERT statement per
file with up to 20 files at once. A first load of `medium`'s five dict-path operations and their
parents (334k rows) peaked at 5.5 GB and took 242 s that way, against 0.46 GB and 157 s in
parquet, with every value and type of every table the same."""
REPLACE_STRATEGY = "insert-from-staging"
"""How dlt loads a table each run replaces: atomically, through the staging dataset."""
IN_PROCESS_BASE_URL = "http://incomaker.invalid"
"""Base URL used with an injected transport (tests, the stand-in in-process): never resolved."""

log = logging.getLogger(__name__)


@dataclass
class FamilyFailure:
    """Operations that failed together (a top-level operation and what it feeds), and why."""

    operations: tuple[str, ...]
    reason: str
    step: str
    """`fetch` (nothing of it was written) or `load` (its package was aborted)."""
    committed: dict[str, int] = field(default_factory=dict)
    """Rows the aborted package had written before the failure (real records, merged by key)."""
    error: BaseException | None = field(default=None, repr=False, compare=False)
    load_ids: list[str] = field(default_factory=list)
    """The aborted load packages (a load failure); their rows carry these `_dlt_load_id`s."""

    def describe(self) -> str:
        names = ", ".join(self.operations)
        if self.step == "fetch":
            return f"{names}: {self.reason} (nothing written, its cursor did not move)"
        packages = ", ".join(self.load_ids) or "its package"
        text = f"{names}: {self.reason}; load package {packages} dropped, its cursor rewound"
        if self.committed:
            rows = ", ".join(f"{t} {n:,}" for t, n in sorted(self.committed.items()))
            text += f" (rows already written, kept and replaced by key next run: {rows})"
        else:
            text += " (none of its rows were written)"
        return text


@dataclass
class FamiliesLoaded:
    """What `load_families` did: row counts, load ids, repairs and failures."""

    rows_loaded: dict[str, int] = field(default_factory=dict)
    load_ids: list[str] = field(default_factory=list)
    loaded_operations: list[str] = field(default_factory=list)
    duplicates_removed: dict[str, int] = field(default_factory=dict)
    failures: list[FamilyFailure] = field(default_factory=list)
    leftovers: Leftovers = field(default_factory=Leftovers)

    @property
    def failed_operations(self) -> list[str]:
        return [name for failure in self.failures for name in failure.operations]


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
    loaded_operations: list[str] = field(default_factory=list)
    duplicates_removed: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    requests_by_operation: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    failures: list[FamilyFailure] = field(default_factory=list)
    leftovers: Leftovers = field(default_factory=Leftovers)
    values: list[ValueNote] = field(default_factory=list)
    """Values of loaded operations that did not come as their field's type
    (incomaker_elt/ingestion/values.py)."""

    @property
    def total_rows_loaded(self) -> int:
        return sum(self.rows_loaded.values())

    @property
    def failed_operations(self) -> list[str]:
        return [name for failure in self.failures for name in failure.operations]

    def problems(self) -> list[str]:
        """Lines for the user: leftovers dealt with, then each failed family."""
        lines = []
        if self.leftovers.any:
            lines.append(f"earlier runs: {self.leftovers.describe()}")
        if self.duplicates_removed:
            removed = ", ".join(f"{t} {n:,}" for t, n in sorted(self.duplicates_removed.items()))
            lines.append(
                "repaired: kept one copy of rows a replayed load or a listing that shifted while "
                f"paged had written twice, and removed child rows without a parent ({removed})"
            )
        lines += [f"failed: {failure.describe()}" for failure in self.failures]
        return lines


class IngestionIncomplete(IngestionError):
    """Some operations failed; the others were loaded. `summary` says which and why."""

    def __init__(self, summary: LoadSummary) -> None:
        failed = [name for f in summary.failures for name in f.operations]
        loaded = sorted(t for t, n in summary.rows_loaded.items() if n)
        reasons = "; ".join(f.describe() for f in summary.failures)
        super().__init__(
            f"{len(failed)} operation(s) failed: {reasons}. "
            f"The other operations were loaded ({len(loaded)} tables got rows"
            f"{': ' + ', '.join(loaded) if loaded else ''}). Fix the cause and run again: "
            "the failed operations continue from their last loaded window."
        )
        self.summary = summary


def configure_dlt(local_warehouse: bool = True) -> None:
    """dlt settings the source relies on.

    - Arrow tables skip dlt's row normaliser: ask dlt to add `_dlt_load_id` to them anyway.
      `_dlt_id` comes with the tables already (records.row_ids), so dlt can load their parquet
      files as written instead of rewriting each one to add it.
    - One operation at a time (`fifo`), each with its requests in parallel: a listing's pages
      follow each other while the server still holds the query, instead of sixty listings
      interleaved page by page (dlt's round robin) that make it recompute every one.
    - Tables replaced by each run (catalogue `history: latest`) are loaded `insert-from-staging`:
      the rows go to the staging dataset first, then one transaction truncates the table and
      inserts them, so a load that fails or is killed leaves the previous snapshot in place
      (dlt's default, `truncate-and-insert`, empties the table before loading it).
    - `local_warehouse` (the embedded DuckDB file): the load files are written without
      compression. DuckDB reads them once from the same disk, so snappy only costs CPU: for the
      largest table of `large` (1.9M rows) writing and loading took 1.29 s of CPU with it and
      0.89 s without. Files sent to another destination stay compressed (dlt's default).
    """
    dlt.config["destination.replace_strategy"] = REPLACE_STRATEGY
    dlt.config["normalize.parquet_normalizer.add_dlt_load_id"] = True
    dlt.config["normalize.parquet_normalizer.add_dlt_id"] = False
    dlt.config["extract.next_item_mode"] = "fifo"
    dlt.config["data_writer.compression"] = "none" if local_warehouse else "snappy"


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


STATES_KEPT = 10
"""The newest states of completed loads kept in the warehouse's `_dlt_pipeline_state`.

dlt adds a row there with the whole state (the cursors and the memory of parents' fingerprints,
compressed) for every load that changed it, and never removes one on SQL destinations. A run
restores the newest of a completed load. At `large` a state was 5.7 MB and a night added two, so
the table grew by ~11 MB a night, and every run's restore read it whole."""


def forget_old_states(pipeline: dlt.Pipeline, keep: int) -> None:
    """Delete the pipeline's stored states older than the newest `keep` of completed loads.

    Housekeeping after a load: if the destination refuses, a warning says so and the rows stay.
    """
    try:
        with pipeline.sql_client() as sql:
            state = sql.make_qualified_table_name(pipeline.default_schema.state_table_name)
            loads = sql.make_qualified_table_name(pipeline.default_schema.loads_table_name)
            sql.execute_sql(
                f"delete from {state} where pipeline_name = %s and _dlt_load_id < ("
                f"  select min(load_id) from ("
                f"    select l.load_id from {state} as s join {loads} as l"
                f"    on l.load_id = s._dlt_load_id"
                f"    where s.pipeline_name = %s and l.status = 0"
                f"    order by l.load_id desc limit {int(keep)}) as kept)",
                pipeline.pipeline_name,
                pipeline.pipeline_name,
            )
    except Exception as exc:  # noqa: BLE001 - any destination's refusal: the rows just stay
        log.warning(
            "could not remove old pipeline states from %s (%s); they stay, and the next run "
            "tries again",
            pipeline.default_schema.state_table_name,
            exc,
        )


def newer_snapshots(
    pipeline: dlt.Pipeline, operations: Sequence[Operation], end: date
) -> dict[str, date]:
    """The `history: latest` tables among `operations` (feeding none of them) whose kept snapshot
    is newer than `end`, with its date: a run for an earlier day (a range run of past days) must
    not replace them with an older one."""
    parents = {op.parent.resource for op in operations if op.parent}
    names = [op.name for op in operations if op.keeps_latest_only and op.name not in parents]
    if not names:
        return {}
    newer: dict[str, date] = {}
    with pipeline.sql_client() as sql:
        existing = existing_tables(sql)
        for name in (n for n in names if n in existing):
            table = sql.make_qualified_table_name(name)
            with sql.execute_query(f"select max(_snapshot_date) from {table}") as cursor:
                (kept,) = cursor.fetchone()
            if isinstance(kept, datetime):
                kept = kept.date()
            if kept is not None and kept > end:
                newer[name] = kept
    return newer


def first_loads(pipeline: dlt.Pipeline, operations: Sequence[Operation]) -> frozenset[str]:
    """The operations among `operations` whose table is absent or holds no row: their rows are
    appended rather than merged (source.write_disposition). Asked again before every extract,
    so a retry after a load that committed rows merges. A table the destination cannot be asked
    about this way (its SQL has no `limit`) counts as holding rows: it is merged, as always."""
    with pipeline.sql_client() as sql:
        existing = existing_tables(sql)
        empty = {op.name for op in operations if op.name not in existing}
        for name in (op.name for op in operations if op.name in existing):
            table = sql.make_qualified_table_name(name)
            try:
                with sql.execute_query(f"select 1 from {table} limit 1") as cursor:
                    if cursor.fetchone() is None:
                        empty.add(name)
            except DatabaseException as exc:
                log.debug("%s: not asked whether it is empty (%s); merged", name, exc)
    return frozenset(empty)


def credentials(
    settings: Settings, transport: httpx.BaseTransport | None = None
) -> tuple[str, str]:
    """The API address and token of `settings` (load_settings() took each from the environment,
    else from dlt's config and secrets: incomaker_elt.contract.settings.api_token)."""
    base_url = settings.base_url
    if not base_url:
        if transport is None:
            raise IngestionError(NO_API_ADDRESS)
        base_url = IN_PROCESS_BASE_URL
    if not settings.api_token:
        raise IngestionError(NO_API_TOKEN)
    return base_url, settings.api_token


def _check_token(client: ApiClient, catalogue: Catalogue) -> None:
    """One one-record request, so a bad token or address fails in seconds with nothing written.

    Only the token and the address are checked here: what the answer holds, or a refusal of
    this one operation (a path that moved), is that operation's business when it runs, and
    fails it alone."""
    probe = next(op for op in catalogue if op.parent is None and op.is_paged and not op.params)
    with contextlib.suppress(RequestRejected):
        client.get(probe.name, probe.url_path(), probe.paging.params(0, 1), whole_body)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it was raised from, each once: the exception dlt wraps (its
    `exception` attribute), else the cause, else the context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "exception", None)
        if isinstance(wrapped, BaseException):
            current = wrapped
        else:
            current = current.__cause__ or current.__context__


def ingestion_error(exc: BaseException) -> IngestionError | None:
    """The IngestionError `exc` comes from (it says what failed and what to do), if any."""
    return next((c for c in causes(exc) if isinstance(c, IngestionError)), None)


def table_rows(pipeline: dlt.Pipeline, operations: Sequence[str]) -> dict[str, int]:
    """Rows each raw table of these operations (their child tables too) holds now.

    Asked of the database, not of dlt's schema, which does not list the tables a run wrote
    when it restored its state from the warehouse.
    """
    counts: dict[str, int] = {}
    roots = set(operations)
    with pipeline.sql_client() as sql:
        for table in sorted(existing_tables(sql)):
            if table.split("__")[0] not in roots:
                continue
            with sql.execute_query(
                f"select count(*) from {sql.make_qualified_table_name(table)}"
            ) as cursor:
                counts[table] = int(cursor.fetchone()[0])
    return counts


def families(catalogue: Catalogue, operations: Sequence[Operation]) -> list[tuple[Operation, ...]]:
    """The operations grouped by the top-level operation that feeds them, in catalogue order."""

    def root(op: Operation) -> str:
        while op.parent is not None:
            op = catalogue.get(op.parent.resource)
        return op.name

    grouped: dict[str, list[Operation]] = {}
    for op in operations:
        grouped.setdefault(root(op), []).append(op)
    return [tuple(ops) for ops in grouped.values()]


def _failure_reason(exc: BaseException) -> str:
    cause: BaseException | None = ingestion_error(exc)
    if cause is not None:
        return str(cause)
    cause = exc
    while isinstance(cause, PipelineStepFailed):
        cause = cause.exception
    first = next((line for line in str(cause).splitlines() if line.strip()), "")
    return f"{type(cause).__name__}: {first[:400]}"


def _failed_resource(exc: BaseException) -> str | None:
    """The resource whose generator raised, as dlt's extract exceptions name it."""
    for cause in causes(exc):
        name = getattr(cause, "pipe_name", None) or getattr(cause, "resource_name", None)
        if isinstance(name, str):
            return name
    return None


Family = tuple[Operation, ...]


def _family_of(group: Sequence[Family], table: str | None) -> int | None:
    """Index of the family in `group` whose operation fills `table` (root or child table)."""
    if table is None:
        return None
    for index, family in enumerate(group):
        for op in family:
            if table == op.name or table.startswith(f"{op.name}__"):
                return index
    return None


def load_families(
    pipeline: dlt.Pipeline,
    catalogue: Catalogue,
    operations: Sequence[Operation],
    make_source: Callable[[Sequence[Operation], frozenset[str]], DltSource],
) -> FamiliesLoaded:
    """Settle what earlier runs left, then load the families; a failing family fails alone.

    All families are first extracted, normalised and loaded together (one package: the fast
    path). When one of them fails, nothing of that attempt is kept (a failed extract commits
    nothing; a failed load is aborted, which rewinds the state), the failing family is recorded
    with its reason, and the others are loaded again without it. After a failed fetch the
    families before the failing one (they fetched fine) go again in one package and each family
    after it on its own, so a second bad operation costs no third fetch of everything; after a
    failed load the rest of the package goes again as one. A failure that names no family fails
    its whole group. Ctrl-C stops the run.
    `make_source` builds the dlt source of the operations given, appending to the tables named
    (first_loads: absent or empty).
    """
    result = FamiliesLoaded(leftovers=settle_leftovers(pipeline, catalogue.operations))
    result.load_ids += result.leftovers.completed
    groups: list[list[Family]] = [families(catalogue, operations)]
    while groups:
        group = groups.pop(0)
        if not group:
            continue
        ops = [op for family in group for op in family]
        try:
            source = make_source(ops, first_loads(pipeline, ops))
            pipeline.extract(source, loader_file_format=LOADER_FILE_FORMAT)
        except PipelineStepFailed as exc:
            if isinstance(exc.exception, KeyboardInterrupt):
                raise
            _drop_unfinished_extract(pipeline)
            culprit = _family_of(group, _failed_resource(exc))
            failure = FamilyFailure((), _failure_reason(exc), "fetch", error=exc)
            groups[:0] = _set_aside(group, culprit, failure, result)
            continue
        try:
            loaded = load_pending(pipeline, ops)
        except LoadFailed as failed:
            culprits = {_family_of(group, table) for table in failed.failed_tables}
            culprit = culprits.pop() if len(culprits) == 1 else None
            failure = FamilyFailure(
                (), failed.reason, "load", failed.committed, failed, failed.load_ids
            )
            groups[:0] = _set_aside(group, culprit, failure, result)
            continue
        result.load_ids += loaded.load_ids
        result.loaded_operations += [op.name for op in ops]
        for table, rows in loaded.row_counts.items():
            result.rows_loaded[table] = result.rows_loaded.get(table, 0) + rows
        for table, rows in loaded.removed.items():
            result.duplicates_removed[table] = result.duplicates_removed.get(table, 0) + rows
    return result


def _set_aside(
    group: list[Family], culprit: int | None, failure: FamilyFailure, result: FamiliesLoaded
) -> list[list[Family]]:
    """Record the failing family (the whole group when none is named); the groups to retry."""
    if culprit is None or len(group) == 1:
        failed, retry = group, []
    elif failure.step == "fetch":
        failed = [group[culprit]]
        retry = [group[:culprit], *([family] for family in group[culprit + 1 :])]
    else:
        failed, retry = [group[culprit]], [group[:culprit] + group[culprit + 1 :]]
    for family in failed:
        names = tuple(op.name for op in family)
        committed = {
            t: n
            for t, n in failure.committed.items()
            if any(t == name or t.startswith(f"{name}__") for name in names)
        }
        result.failures.append(
            FamilyFailure(
                names, failure.reason, failure.step, committed, failure.error, failure.load_ids
            )
        )
        log.error("%s: %s failed: %s", ", ".join(names), failure.step, failure.reason)
    return retry


def _drop_unfinished_extract(pipeline: dlt.Pipeline) -> None:
    """A failed extract commits no package; abort any that is left, so nothing half-done stays."""
    if pipeline.list_extracted_load_packages():
        pipeline.abort_packages()


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
    operations: Sequence[Operation] | None = None,
    client: ApiClient | None = None,
    fixed_window: bool = False,
) -> LoadSummary:
    """Load the selected operations (all by default) into the raw dataset.

    Raises IngestionIncomplete (with the summary) when some operations failed and the others
    were loaded, IngestionError when nothing could run (token, address, dates).

    `only` takes operation names or group names; the parents feeding a selected per-id operation
    are loaded too. `start` is where history starts on a first run (default: the partitions start),
    `end` the last day asked for and the snapshot date of aggregates (default: today, UTC).
    `exclude` names operations to leave out of the selection (unless another one needs them).
    `operations`: exactly these (and their parents), instead of `only` and `exclude`.
    `client`: the API client to use (closed at the end), else one from the settings' address
    and token (`transport`, `retry`): in processes of their own (client_process.py) unless
    `transport` is given. `fixed_window`: fetch exactly [start, end], cursors
    neither read nor moved (a backfill of partitions).
    """
    started = time.monotonic()
    catalogue = catalogue or default_catalogue()
    dates = RunDates(
        start=start or settings.partitions_start,
        end=end or datetime.now(UTC).date(),
        fixed=fixed_window,
    )
    if dates.start > dates.end:
        raise IngestionError(f"start date {dates.start} is after end date {dates.end}")
    if operations is None:
        operations = [op for op in catalogue.select(only) if op.name not in set(exclude)]
    operations = with_ancestors(catalogue, operations)
    if client is None:
        base_url, token = credentials(settings, transport)
        client = api_client(
            base_url,
            token,
            processes=settings.fetch_processes,
            max_in_flight=settings.ingest_concurrency,
            requests_per_second=settings.requests_per_second,
            retry=retry,
            transport=transport,
        )
    progress = Progress(report)
    fetcher = Fetcher(
        client,
        page_size=catalogue.page_size,
        concurrency=settings.ingest_concurrency,
        progress=progress,
    )
    try:
        _check_token(client, catalogue)
        configure_dlt(local_warehouse=not settings.dlt_destination)
        pipeline = make_pipeline(settings)
        pipeline.sync_destination()
        newer = newer_snapshots(pipeline, operations, dates.end)
        for name, kept in newer.items():
            log.warning(
                "%s: kept the warehouse's snapshot as of %s; this run's, as of %s, is older",
                name,
                kept,
                dates.end,
            )
        operations = [op for op in operations if op.name not in newer]
        outcome = load_families(
            pipeline,
            catalogue,
            operations,
            lambda family, empty: incomaker_source(
                catalogue, fetcher, dates, family, chunk_rows, empty
            ),
        )
        forget_old_states(pipeline, STATES_KEPT)
        summary = LoadSummary(
            start=dates.start,
            end=dates.end,
            operations=dict(progress.operations),
            rows_loaded=outcome.rows_loaded,
            duplicates_removed=outcome.duplicates_removed,
            table_rows=table_rows(pipeline, [op.name for op in operations]),
            load_ids=outcome.load_ids,
            loaded_operations=outcome.loaded_operations,
            requests=client.requests,
            retries=client.retries,
            requests_by_operation=dict(client.requests_by_operation),
            seconds=time.monotonic() - started,
            failures=outcome.failures,
            leftovers=outcome.leftovers,
            values=[n for n in progress.values.all() if n.operation in outcome.loaded_operations],
        )
    finally:
        fetcher.close()
        client.close()
    if summary.failures:
        raise IngestionIncomplete(summary)
    return summary
