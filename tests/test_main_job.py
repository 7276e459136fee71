"""The whole pipeline through Dagster against the stand-in API, in a temporary folder.

One full run (every asset, every check the job runs) is shared by the tests of this module; a
reader process reads the serving warehouse in a loop for the whole of it. The mismatch and the
backfill tests run small runs of their own.
"""

import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import duckdb
import orjson
import pytest

from incomaker_elt.contract.settings import PROJECT_ROOT, Settings
from incomaker_elt.orchestration.serving import publish_serving_warehouse
from incomaker_elt.orchestration.transform import prepare_manifest
from incomaker_elt.run import standin_process
from incomaker_elt.standin import StandIn
from incomaker_elt.standin.service import Reply

TODAY_ISO = "2026-06-30"
FIRST_DAY = "2025-01-01"
MARTS = sorted(p.stem for p in (PROJECT_ROOT / "dbt_project" / "models" / "marts").rglob("*.sql"))
SERVING_KEY = dg.AssetKey(["serving", "incomaker_serving"])
CONVERSIONS_CHECK = dg.AssetCheckKey(
    dg.AssetKey(["marts", "fct_conversions"]), "conversion_totals_match_api"
)


def _settings(root: Path, base_url: str) -> Settings:
    return Settings(
        warehouse_path=root / "warehouse" / "incomaker.duckdb",
        base_url=base_url,
        api_token="standin-token",
        catalogue_overrides=None,
        dagster_home=root / "dagster_home",
    )


def _definitions(settings: Settings) -> dg.Definitions:
    from incomaker_elt.orchestration.definitions import build_definitions

    return build_definitions(settings)


def _range_tags(first: str, last: str) -> dict[str, str]:
    from incomaker_elt.orchestration.schedules import partition_range_tags

    return partition_range_tags(first, last)


# ------------------------------------------------------------------- the reader of the copy


def _read_serving_in_a_loop(path: str, marts: list[str], stop, out) -> None:
    """What a BI tool does: open read-only, query every mart, close; again and again."""
    reads, run_ids, errors = 0, set(), []
    while not stop.is_set():
        try:
            con = duckdb.connect(path, read_only=True)
            try:
                present = {
                    r[0]
                    for r in con.execute(
                        "select table_name from information_schema.tables "
                        "where table_schema = 'marts'"
                    ).fetchall()
                }
                missing = sorted(set(marts) - present)
                if missing:
                    errors.append(f"marts missing: {missing}")
                for mart in sorted(present):
                    con.execute(f'select count(*) from marts."{mart}"').fetchone()
                run_ids.add(con.execute("select run_id from main.publication").fetchone()[0])
            finally:
                con.close()
            reads += 1
        except Exception as exc:  # a lock error or a half-written file would land here
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.25)  # a dashboard refreshing, not a busy loop stealing a core from the run
    out.put((reads, sorted(run_ids), errors[:5]))


def _publish_yesterdays_copy(settings: Settings) -> None:
    """The serving copy a previous night left: every mart present (here empty)."""
    old = settings.warehouse_path.with_name("yesterday.duckdb")
    con = duckdb.connect(str(old))
    con.execute("create schema marts")
    for mart in MARTS:
        con.execute(f'create table marts."{mart}" (id integer)')
    con.close()
    publish_serving_warehouse(old, settings.serving_warehouse_path, run_id="yesterday")
    old.unlink()


# ---------------------------------------------------------------------------- the full run


@dataclass
class FullRun:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    result: dg.ExecuteInProcessResult
    reads: int
    reader_run_ids: list[str]
    reader_errors: list[str]
    seconds: float


@pytest.fixture(scope="module")
def standin(small_world) -> Iterator[tuple[StandIn, str]]:
    service = StandIn(small_world, token="standin-token")
    with service.serve(host="127.0.0.1", port=0) as base_url:
        yield service, base_url


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullRun]:
    # The stand-in as `incomaker-elt run` starts it: a child process, so that serving the API
    # and loading it use both cores.
    with standin_process("small", 1, None) as standin:
        yield from _full_run(tmp_path_factory, standin.base_url, standin.token)


def _full_run(
    tmp_path_factory: pytest.TempPathFactory, base_url: str, token: str
) -> Iterator[FullRun]:
    settings = replace(_settings(tmp_path_factory.mktemp("full_run"), base_url), api_token=token)
    settings.warehouse_path.parent.mkdir(parents=True)
    prepare_manifest()
    defs = _definitions(settings)
    _publish_yesterdays_copy(settings)

    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(
        target=_read_serving_in_a_loop,
        args=(str(settings.serving_warehouse_path), MARTS, stop, out),
    )
    reader.start()
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.monotonic()
        try:
            result = defs.resolve_job_def("warehouse_refresh").execute_in_process(
                instance=instance, tags=_range_tags(FIRST_DAY, TODAY_ISO), raise_on_error=False
            )
            seconds = time.monotonic() - started
            time.sleep(1)  # let the reader see the new copy
        finally:
            stop.set()
            reads, run_ids, errors = out.get(timeout=60)
            reader.join(timeout=30)
        yield FullRun(settings, defs, instance, result, reads, run_ids, errors, seconds)


def _check_evaluations(result: dg.ExecuteInProcessResult) -> list:
    return [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]


def test_everything_materialises_and_every_check_passes(full_run: FullRun) -> None:
    result = full_run.result
    failures = [e.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    graph = full_run.defs.resolve_asset_graph()
    materializable = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    materialized = {
        e.asset_key for e in result.all_events if e.is_step_materialization and e.asset_key
    }
    assert materialized == materializable
    evaluations = _check_evaluations(result)
    failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed]
    assert failed == []
    names = {e.check_name for e in evaluations}
    assert {
        "conversion_totals_match_api",
        "smartflow_daily_results_match_api",
        "rfm_cells_match_api",
    } <= names
    assert len(evaluations) > 100  # the dbt tests ran as checks too


def test_every_check_shows_passed_on_its_assets_latest_materialisation(full_run: FullRun) -> None:
    """What the UI shows after the run: each check's latest execution passed and is about the
    materialisation its asset has now (dbt's tests are evaluated outside the run's plan)."""
    instance = full_run.instance
    graph = full_run.defs.resolve_asset_graph()
    checks = [key for key in graph.asset_check_keys if key.name != "freshness_check"]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(checks)
    assert set(latest) == set(checks)
    stale, failed = [], []
    for key, execution in latest.items():
        evaluation = execution.evaluation
        if evaluation is None or not evaluation.passed:
            failed.append(key.to_user_string())
            continue
        (materialization,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key.asset_key), limit=1
        ).records
        target = evaluation.target_materialization_data
        if target is None or target.storage_id != materialization.storage_id:
            stale.append(key.to_user_string())
    assert (failed, stale) == ([], [])


def test_materialisations_record_row_counts_and_column_schemas(full_run: FullRun) -> None:
    latest: dict[dg.AssetKey, dict] = {}
    for event in full_run.result.all_events:
        if event.is_step_materialization and event.asset_key:
            latest[event.asset_key] = event.step_materialization_data.materialization.metadata
    for key in (
        dg.AssetKey(["incomaker_raw", "conversions"]),
        dg.AssetKey(["incomaker_raw", "contacts"]),
        dg.AssetKey(["marts", "fct_conversions"]),
        dg.AssetKey(["marts", "rfm_contacts"]),
    ):
        metadata = latest[key]
        assert metadata["dagster/row_count"].value > 0, key
        assert metadata["dagster/column_schema"].value.columns, key
    raw = dg.AssetKey(["incomaker_raw", "conversions"])
    con = duckdb.connect(str(full_run.settings.serving_warehouse_path), read_only=True)
    try:
        (served,) = con.execute("select count(*) from marts.fct_conversions").fetchone()
    finally:
        con.close()
    assert latest[dg.AssetKey(["marts", "fct_conversions"])]["dagster/row_count"].value == served
    assert latest[raw]["dagster/row_count"].value >= served


def test_the_serving_warehouse_holds_every_mart_and_staging(full_run: FullRun) -> None:
    path = full_run.settings.serving_warehouse_path
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
        run_id = con.execute("select run_id from main.publication").fetchone()[0]
        totals = con.execute("select count(*) from marts.fct_conversions").fetchone()[0]
    finally:
        con.close()
    assert sorted(name for schema, name in tables if schema == "marts") == MARTS
    assert any(schema == "staging" for schema, _ in tables)
    assert run_id == full_run.result.run_id
    assert totals > 0


def test_a_reader_never_fails_and_never_misses_a_mart_during_the_run(full_run: FullRun) -> None:
    assert full_run.reader_errors == []
    assert full_run.reads > 20, f"the reader only read {full_run.reads} times"
    # It read yesterday's copy during the run and tonight's after it: the replace was seamless.
    assert full_run.reader_run_ids == sorted(["yesterday", full_run.result.run_id])


# ------------------------------------------------------------------------- a lying API


class TotalsOffByOne(StandIn):
    """The stand-in, except that /conversions/totals counts one conversion too many."""

    def handle(self, method, path, query, headers) -> Reply:
        reply = super().handle(method, path, query, headers)
        if path.endswith("/conversions/totals") and reply.status == 200:
            body = orjson.loads(reply.body)
            body["conversions"]["conversionsNumber"] += 1
            body["conversions"]["breakdown"][0]["conversionsNumber"] += 1
            reply = Reply(reply.status, orjson.dumps(body), reply.headers, reply.delay)
        return reply


def test_a_reconciliation_mismatch_fails_the_check_and_publishes_nothing(
    full_run: FullRun, small_world
) -> None:
    serving = full_run.settings.serving_warehouse_path
    before = (serving.stat().st_ino, serving.stat().st_mtime_ns)
    liar = TotalsOffByOne(small_world, token="standin-token")
    with liar.serve(host="127.0.0.1", port=0) as base_url:
        settings = replace(full_run.settings, base_url=base_url, api_token="standin-token")
        defs = _definitions(settings)
        job = defs.resolve_job_def("warehouse_refresh")
        result = job.execute_in_process(
            instance=full_run.instance,
            asset_selection=[dg.AssetKey(["marts", "fct_conversions"]), SERVING_KEY],
            raise_on_error=False,
        )
    assert not result.success
    (evaluation,) = [
        e for e in _check_evaluations(result) if e.check_name == CONVERSIONS_CHECK.name
    ]
    assert not evaluation.passed
    assert evaluation.metadata["differences"].value >= 1
    assert "conversions: warehouse" in evaluation.metadata["first_differences"].value
    published = [
        e for e in result.all_events if e.is_step_materialization and e.asset_key == SERVING_KEY
    ]
    assert published == []
    assert (serving.stat().st_ino, serving.stat().st_mtime_ns) == before


# --------------------------------------------------------------------------- a 3-day backfill


def test_a_three_day_backfill_fetches_exactly_those_days(
    standin: tuple[StandIn, str], tmp_path: Path
) -> None:
    service, base_url = standin
    settings = _settings(tmp_path, base_url)
    defs = _definitions(settings)
    graph = defs.resolve_asset_graph()
    partitioned = [
        k
        for k in graph.get_all_asset_keys()
        if graph.get(k).is_materializable and graph.get(k).partitions_def is not None
    ]
    windowed = {
        op.path: op.name
        for op in service.catalogue
        if op.kind == "event" and dg.AssetKey(["incomaker_raw", op.name]) in partitioned
    }
    service.request_log.clear()
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("warehouse_refresh").execute_in_process(
            instance=instance,
            asset_selection=partitioned,
            tags=_range_tags("2026-06-10", "2026-06-12"),
            raise_on_error=False,
        )
        assert result.success
        loaded = instance.get_materialized_partitions(dg.AssetKey(["incomaker_raw", "orders"]))
    assert loaded == {"2026-06-10", "2026-06-11", "2026-06-12"}

    requests = service.request_log.snapshot()
    window_requests = [r for r in requests if r.path in windowed]
    assert {windowed[r.path] for r in window_requests} == set(windowed.values())
    windows = {(r.params.get("dateFrom"), r.params.get("dateTo")) for r in window_requests}
    assert windows == {("2026-06-10", "2026-06-12")}

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        days = con.execute(
            "select min(date), max(date), count(*) from incomaker_raw.conversions"
        ).fetchone()
        orders = con.execute(
            "select min(cast(created_at as date)), max(cast(created_at as date)) "
            "from incomaker_raw.orders"
        ).fetchone()
    finally:
        con.close()
    assert str(days[0]) >= "2026-06-10" and str(days[1]) <= "2026-06-12" and days[2] > 0
    assert str(orders[0]) >= "2026-06-10" and str(orders[1]) <= "2026-06-12"
