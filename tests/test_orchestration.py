"""The Dagster definitions: exact assets, lineage, partitions, jobs, schedule, sensors and checks.

Built from placeholder settings in a temporary folder; nothing here calls the API.
"""

import os
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster._core.utils import make_new_run_id

from incomaker_elt.contract.catalogue import load_catalogue
from incomaker_elt.contract.settings import PROJECT_ROOT, Settings
from incomaker_elt.orchestration.transform import prepare_manifest

CATALOGUE = load_catalogue()
MODELS_DIR = PROJECT_ROOT / "dbt_project" / "models"

# Written out, not derived: the operations whose days are daily partitions (events, and the
# per-id operations fed by them).
PARTITIONED = {
    "abandoned_carts",
    "abandoned_cart_detail",
    "campaigns_daily_results",
    "contacts_for_period",
    "conversions",
    "conversions_history",
    "contacts_unsubscribed",
    "delivery_conversions",
    "delivery_recipient_activity",
    "deliveries_daily_results",
    "dialogs_data",
    "orders",
    "order_detail",
}
RECONCILIATION_CHECKS = {
    dg.AssetCheckKey(dg.AssetKey(["marts", "fct_conversions"]), "conversion_totals_match_api"),
    dg.AssetCheckKey(dg.AssetKey(["marts", "delivery_daily"]), "smartflow_daily_results_match_api"),
    dg.AssetCheckKey(dg.AssetKey(["marts", "rfm_contacts"]), "rfm_cells_match_api"),
}
DUCKDB_STEPS = {"incomaker_raw_events", "incomaker_raw_snapshots", "incomaker_dbt"}


def _dbt_model_keys() -> set[dg.AssetKey]:
    """One key per model file: [the layer's schema, the model name]."""
    return {
        dg.AssetKey([path.relative_to(MODELS_DIR).parts[0], path.stem])
        for path in MODELS_DIR.rglob("*.sql")
    }


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("orchestration")
    return Settings(
        warehouse_path=root / "warehouse" / "incomaker.duckdb",
        base_url="http://api.invalid",
        api_token="placeholder",
        catalogue_overrides=None,
        dagster_home=root / "dagster_home",
    )


@pytest.fixture(scope="module")
def defs(settings: Settings) -> dg.Definitions:
    prepare_manifest()  # the manifest must describe the models on disk, not an older state
    from incomaker_elt.orchestration.definitions import build_definitions

    return build_definitions(settings, CATALOGUE)


def test_exactly_one_asset_per_operation_table_and_model(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    api = {dg.AssetKey(["incomaker_api", op.name]) for op in CATALOGUE}
    raw = {dg.AssetKey(["incomaker_raw", op.name]) for op in CATALOGUE}
    models = _dbt_model_keys()
    assert len(api) == len(raw) == 68
    assert {"staging", "intermediate", "marts"} <= {key.path[0] for key in models}
    expected = api | raw | models | {dg.AssetKey(["serving", "incomaker_serving"])}
    assert set(graph.get_all_asset_keys()) == expected
    assert {key for key in expected if not graph.get(key).is_materializable} == api


def test_lineage_runs_from_api_operation_to_raw_table_to_staging_to_mart(
    defs: dg.Definitions,
) -> None:
    graph = defs.resolve_asset_graph()
    for op in CATALOGUE:
        raw = dg.AssetKey(["incomaker_raw", op.name])
        assert graph.get(raw).parent_keys == {dg.AssetKey(["incomaker_api", op.name])}
    # Every raw table feeds a staging model through the dbt source's meta.dagster.asset_key.
    staged = {
        parent
        for key in graph.get_all_asset_keys()
        if key.path[0] == "staging"
        for parent in graph.get(key).parent_keys
    }
    assert {k for k in staged if k.path[0] == "incomaker_raw"} == {
        dg.AssetKey(["incomaker_raw", op.name]) for op in CATALOGUE
    }
    fct_conversions = graph.get(dg.AssetKey(["marts", "fct_conversions"]))
    upstream = graph.get(dg.AssetKey(["intermediate", "int_conversions__attributed"]))
    assert upstream.key in fct_conversions.parent_keys
    assert dg.AssetKey(["staging", "stg_incomaker__conversions"]) in upstream.parent_keys
    serving = graph.get(dg.AssetKey(["serving", "incomaker_serving"]))
    assert {k for k in _dbt_model_keys() if k.path[0] == "marts"} <= serving.parent_keys


def test_events_are_daily_partitions_and_the_rest_is_unpartitioned(
    defs: dg.Definitions, settings: Settings
) -> None:
    graph = defs.resolve_asset_graph()
    partitioned = {
        key.path[1]
        for key in graph.get_all_asset_keys()
        if graph.get(key).is_materializable and graph.get(key).partitions_def is not None
    }
    assert partitioned == PARTITIONED
    daily = graph.get(dg.AssetKey(["incomaker_raw", "conversions"])).partitions_def
    assert isinstance(daily, dg.DailyPartitionsDefinition)
    assert daily.start.date() == settings.partitions_start == date(2025, 1, 1)
    assert daily.timezone == "UTC"
    events = defs.get_assets_def(dg.AssetKey(["incomaker_raw", "conversions"]))
    assert events.backfill_policy == dg.BackfillPolicy.single_run()


def test_jobs_schedules_and_sensors(defs: dg.Definitions) -> None:
    repository = defs.get_repository_def()
    assert {j for j in repository.job_names if not j.startswith("__")} == {"warehouse_refresh"}
    assert [s.name for s in repository.schedule_defs] == ["nightly_warehouse_refresh"]
    schedule = repository.get_schedule_def("nightly_warehouse_refresh")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Europe/Prague"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert {s.name for s in repository.sensor_defs} == {
        "run_failure_alert",
        "raw_freshness_checks_sensor",
    }


def test_checks(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    checks = set(graph.asset_check_keys)
    assert checks >= RECONCILIATION_CHECKS
    # Blocking where a mismatch must stop publishing; the RFM check warns while it cannot compare.
    assert {key.name for key in RECONCILIATION_CHECKS if graph.get_check_spec(key).blocking} == {
        "conversion_totals_match_api",
        "smartflow_daily_results_match_api",
    }
    freshness = {c.asset_key for c in checks if c.name == "freshness_check"}
    assert freshness == {dg.AssetKey(["incomaker_raw", op.name]) for op in CATALOGUE}
    dbt_checks = checks - RECONCILIATION_CHECKS - {c for c in checks if c.name == "freshness_check"}
    models = _dbt_model_keys()
    assert len(dbt_checks) > 100, "dbt tests should load as asset checks"
    assert {c.asset_key for c in dbt_checks} <= models
    assert (
        dg.AssetCheckKey(
            dg.AssetKey(["marts", "fct_conversions"]), "unique_fct_conversions_conversion_id"
        )
        in dbt_checks
    )


def test_the_refresh_job_builds_everything_but_leaves_freshness_to_its_sensor(
    defs: dg.Definitions,
) -> None:
    job = defs.resolve_job_def("warehouse_refresh")
    graph = defs.resolve_asset_graph()
    materializable = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    assert job.asset_layer.selected_asset_keys == materializable
    selected_checks = set(job.asset_layer.asset_graph.asset_check_keys)
    assert selected_checks >= RECONCILIATION_CHECKS
    assert not {c for c in selected_checks if c.name == "freshness_check"}
    # dbt's tests run inside the dbt build, outside the run's plan (transform_assets.
    # builds_tests_unplanned): a failed run then shows no "Execution failed" for tests never run.
    dbt_checks = set(defs.resolve_asset_graph().asset_check_keys) - RECONCILIATION_CHECKS
    assert not {c for c in dbt_checks if c.name != "freshness_check"} & selected_checks


def test_every_step_opening_the_warehouse_takes_the_duckdb_pool(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("warehouse_refresh")
    pools = {node.name: node.definition.pool for node in job.graph.node_dict.values()}
    duckdb_steps = {name for name, pool in pools.items() if pool == "duckdb_warehouse"}
    assert duckdb_steps >= DUCKDB_STEPS
    assert "serving__incomaker_serving" in duckdb_steps or any(
        "incomaker_serving" in name for name in duckdb_steps
    )
    assert sum("match_api" in name for name in duckdb_steps) == 3


def test_the_instance_runs_one_run_and_one_warehouse_step_at_a_time(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / ".dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        config = instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == 1
    assert config.pool_config.default_pool_limit == 1


def test_a_nightly_tick_asks_for_yesterday_and_the_days_that_can_still_change(
    defs: dg.Definitions,
) -> None:
    schedule = defs.get_repository_def().get_schedule_def("nightly_warehouse_refresh")
    tick = datetime(2026, 6, 30, 2, 0, tzinfo=ZoneInfo("Europe/Prague"))
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests
    assert requests is not None and len(requests) == 1
    request = requests[0]
    assert request.run_key == "nightly-2026-06-29"
    # Yesterday, and the 30 days before it: conversions are recorded up to 30 days late.
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-05-30"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "2026-06-29"


def test_after_nights_without_a_refresh_the_range_reaches_back_to_the_last_one(
    defs: dg.Definitions,
) -> None:
    """The last whole refresh loaded through 2026-06-22; a week of nights was missed. What it read
    of 05-24 and later could still change (up to 30 days late), so the range starts at 05-24, not
    at 05-30."""
    from dagster._core.storage.dagster_run import DagsterRun

    from incomaker_elt.orchestration.schedules import REFRESH_JOB_NAME

    def add(status: dg.DagsterRunStatus, last: str, selection: frozenset | None = None) -> None:
        instance.add_run(
            DagsterRun(
                job_name=REFRESH_JOB_NAME,
                run_id=make_new_run_id(),
                status=status,
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: "2025-01-01",
                    ASSET_PARTITION_RANGE_END_TAG: last,
                },
                asset_selection=selection,
            )
        )

    schedule = defs.get_repository_def().get_schedule_def("nightly_warehouse_refresh")
    tick = datetime(2026, 6, 30, 2, 0, tzinfo=ZoneInfo("Europe/Prague"))
    with dg.instance_for_test() as instance:
        add(dg.DagsterRunStatus.SUCCESS, "2026-06-22", frozenset())  # as `incomaker-elt run`
        add(dg.DagsterRunStatus.FAILURE, "2026-06-27")  # loaded, but not a whole success
        add(dg.DagsterRunStatus.SUCCESS, "2026-06-28", frozenset({dg.AssetKey("x")}))  # a part
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            (request,) = schedule.evaluate_tick(context).run_requests or []
        assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-05-24"
        assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "2026-06-29"
        add(dg.DagsterRunStatus.SUCCESS, "2026-06-28")  # last night's whole run: the usual 31 days
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            (request,) = schedule.evaluate_tick(context).run_requests or []
        assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-05-30"


def test_the_first_nights_clip_to_the_partitions_start(defs: dg.Definitions) -> None:
    schedule = defs.get_repository_def().get_schedule_def("nightly_warehouse_refresh")
    tick = datetime(2025, 1, 3, 2, 0, tzinfo=ZoneInfo("Europe/Prague"))
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context,
    ):
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2025-01-01"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "2025-01-02"


def test_a_failed_run_is_logged_and_posted_to_the_webhook(settings: Settings) -> None:
    from incomaker_elt.orchestration.alerts import build_run_failure_sensor

    posted: list[httpx.Request] = []

    def webhook(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(200)

    @dg.op
    def load_raw_tables() -> None:
        raise RuntimeError("the API said no")

    @dg.job
    def nightly() -> None:
        load_raw_tables()

    hooked = Settings(**{**settings.__dict__, "alert_webhook_url": "https://hooks.invalid/x"})
    sensor = build_run_failure_sensor(hooked, transport=httpx.MockTransport(webhook))
    with dg.DagsterInstance.ephemeral() as instance:
        result = nightly.execute_in_process(instance=instance, raise_on_error=False)
        (record,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        failure = record.get_dagster_event()
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
        ).for_run_failure()
        sensor(context)
    assert len(posted) == 1
    text = httpx.Response(200, content=posted[0].content).json()["text"]
    assert "job nightly failed" in text and "load_raw_tables" in text
    assert "placeholder" not in text  # the token never leaves


def test_no_webhook_no_post(settings: Settings) -> None:
    from incomaker_elt.orchestration.alerts import post_to_webhook

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert (
        post_to_webhook("https://hooks.invalid/x", "m", httpx.MockTransport(unreachable)) is False
    )


def test_the_workspace_loads_the_code_location(tmp_path: Path) -> None:
    """What `make ui` loads: workspace.yaml -> incomaker_elt.orchestration.definitions:defs."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "INCOMAKER_WAREHOUSE": str(tmp_path / "warehouse" / "incomaker.duckdb"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [
            Path(sys.executable).with_name("dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location incomaker_elt" in result.stdout + result.stderr
