"""What the Dagster UI shows of the dbt assets and the checks: groups, singular tests attached to
their models, blocking only where a failure blocks, and a failed run that leaves the checks it
never ran alone instead of marking them "Execution failed"."""

import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from incomaker_elt.contract.settings import Settings
from incomaker_elt.orchestration.schedules import partition_range_tags
from incomaker_elt.orchestration.transform import prepare_manifest

CONVERSIONS = dg.AssetKey(["marts", "fct_conversions"])
RECONCILIATION = {
    dg.AssetCheckKey(CONVERSIONS, "conversion_totals_match_api"),
    dg.AssetCheckKey(dg.AssetKey(["marts", "delivery_daily"]), "smartflow_daily_results_match_api"),
    dg.AssetCheckKey(dg.AssetKey(["marts", "rfm_contacts"]), "rfm_cells_match_api"),
}
SINGULAR_TESTS = {
    "assert_api_conversion_totals_breakdown_adds_up": (
        dg.AssetKey(["staging", "stg_incomaker__conversions_totals_breakdown"]),
        True,
    ),
    "assert_reference_currency_is_the_apis": (
        dg.AssetKey(["staging", "stg_incomaker__conversions_totals"]),
        True,
    ),
    "assert_api_attribution_is_reproduced": (  # severity warn: reported, never blocking
        dg.AssetKey(["intermediate", "int_conversions__attribution_checked"]),
        False,
    ),
}


def _settings(root: Path) -> Settings:
    return Settings(
        warehouse_path=root / "warehouse" / "incomaker.duckdb",
        base_url="http://api.invalid",
        api_token="placeholder",
        catalogue_overrides=None,
        dagster_home=root / "dagster_home",
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(tmp_path_factory.mktemp("presentation"))


@pytest.fixture(scope="module")
def defs(settings: Settings) -> dg.Definitions:
    prepare_manifest()  # the singular tests' meta must be in the manifest Dagster reads
    from incomaker_elt.orchestration.definitions import build_definitions

    return build_definitions(settings)


def _dbt_checks(defs: dg.Definitions) -> set[dg.AssetCheckKey]:
    return set(defs.get_assets_def(CONVERSIONS).check_keys)


def test_dbt_models_are_grouped_by_layer(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    groups = {
        key.to_user_string(): graph.get(key).group_name
        for key in (
            dg.AssetKey(["staging", "stg_incomaker__conversions"]),
            dg.AssetKey(["intermediate", "int_conversions__attributed"]),
            CONVERSIONS,
            dg.AssetKey(["marts", "rfm_contacts"]),
        )
    }
    assert groups == {
        "staging/stg_incomaker__conversions": "staging",
        "intermediate/int_conversions__attributed": "intermediate",
        "marts/fct_conversions": "marts",
        "marts/rfm_contacts": "marts",
    }
    dbt_keys = defs.get_assets_def(CONVERSIONS).keys
    assert {graph.get(key).group_name for key in dbt_keys} == {"staging", "intermediate", "marts"}
    assert all(graph.get(key).group_name == key.path[0] for key in dbt_keys)


def test_singular_tests_are_checks_on_the_model_they_test(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    found = {
        key.name: (key.asset_key, graph.get_check_spec(key).blocking)
        for key in graph.asset_check_keys
        if key.name in SINGULAR_TESTS
    }
    assert found == SINGULAR_TESTS


def test_only_checks_whose_failure_blocks_are_blocking(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    blocking = {key.name for key in RECONCILIATION if graph.get_check_spec(key).blocking}
    assert blocking == {"conversion_totals_match_api", "smartflow_daily_results_match_api"}


def test_the_refresh_job_plans_the_reconciliation_but_not_the_dbt_tests(
    defs: dg.Definitions,
) -> None:
    job = defs.resolve_job_def("warehouse_refresh")
    planned = set(job.asset_layer.asset_graph.asset_check_keys)
    assert planned >= RECONCILIATION
    assert not planned & _dbt_checks(defs)
    assert len(_dbt_checks(defs)) > 200  # every dbt test is still a check of its model


def test_a_failed_dbt_step_reports_no_check_it_never_ran(
    defs: dg.Definitions, settings: Settings
) -> None:
    """The refresh job's dbt step and reconciliation where the warehouse's lock file cannot be
    opened (a folder stands in its place): the dbt step fails before dbt starts and no test runs.
    No dbt test was in the run's plan, so none shows "Execution failed"; the reconciliation
    checks, planned steps of their own, do."""
    from incomaker_elt.orchestration.warehouse import lock_path

    lock_path(settings.warehouse_path).mkdir(parents=True, exist_ok=True)
    dbt_keys = defs.get_assets_def(CONVERSIONS).keys
    dbt_checks = _dbt_checks(defs)
    job = defs.resolve_job_def("warehouse_refresh").get_subset(
        asset_selection=set(dbt_keys), asset_check_selection=RECONCILIATION
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        failed_steps = {
            e.step_key
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_FAILURE
        }
        planned = {
            record.get_dagster_event().asset_check_planned_data.asset_check_key
            for record in instance.all_logs(
                result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
            )
        }
        evaluated = instance.all_logs(
            result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            list(dbt_checks | RECONCILIATION)
        )
    assert not result.success
    assert failed_steps == {"incomaker_dbt"}
    assert planned == RECONCILIATION
    assert not evaluated
    # "Not evaluated" in the UI, where the planned dbt tests showed "Execution failed".
    assert set(latest) == RECONCILIATION


class _RejectEveryToken(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message": "invalid token"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_rejecting_the_token() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RejectEveryToken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refresh_whose_load_fails_reports_no_dbt_test_it_never_ran(
    tmp_path: Path, api_rejecting_the_token: str
) -> None:
    """The whole refresh job against an API that rejects the token (not retried): the loads
    fail, dbt never starts. No dbt test shows "Execution failed"; only the reconciliation checks,
    which the run planned, do."""
    from incomaker_elt.orchestration.definitions import build_definitions

    settings = replace(_settings(tmp_path), base_url=api_rejecting_the_token)
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("warehouse_refresh").execute_in_process(
            instance=instance,
            tags=partition_range_tags("2025-01-01", "2025-01-01"),
            raise_on_error=False,
        )
        failed_steps = {
            e.step_key
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_FAILURE
        }
        planned = {
            record.get_dagster_event().asset_check_planned_data.asset_check_key
            for record in instance.all_logs(
                result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
            )
        }
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            list(_dbt_checks(defs))
        )
    assert not result.success
    assert failed_steps == {"incomaker_raw_events", "incomaker_raw_snapshots"}
    assert planned == RECONCILIATION
    assert not latest


def test_a_build_outside_the_plan_yields_outputs_and_blocking_evaluations(
    defs: dg.Definitions,
) -> None:
    from incomaker_elt.orchestration.transform_assets import as_step_events

    dbt = defs.get_assets_def(CONVERSIONS)
    unique = dg.AssetCheckKey(CONVERSIONS, "unique_fct_conversions_conversion_id")
    warned = dg.AssetCheckKey(
        dg.AssetKey(["intermediate", "int_conversions__attribution_checked"]),
        "assert_api_attribution_is_reproduced",
    )
    events = as_step_events(
        [
            dg.AssetMaterialization(CONVERSIONS, metadata={"dagster/row_count": 7}),
            dg.AssetCheckEvaluation(
                asset_key=unique.asset_key, check_name=unique.name, passed=False
            ),
            dg.AssetCheckEvaluation(
                asset_key=warned.asset_key,
                check_name=warned.name,
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
            ),
        ],
        dbt,
    )
    output, failed, warning = events
    assert isinstance(output, dg.Output)
    assert output.output_name == dbt.get_output_name_for_asset_key(CONVERSIONS)
    assert output.metadata["dagster/row_count"] == dg.MetadataValue.int(7)
    assert (failed.asset_check_key, failed.blocking, failed.passed) == (unique, True, False)
    assert (warning.asset_check_key, warning.blocking) == (warned, False)


def test_an_evaluation_outside_the_plan_points_at_the_materialisation_it_checked() -> None:
    """What the dbt step does with a test outside the run's plan, in a step of its own: the
    evaluation names the model's materialisation, so the UI counts it for the latest one."""
    from incomaker_elt.orchestration.transform_assets import on_latest_materialization

    check = dg.AssetCheckKey(dg.AssetKey("model"), "unique_id")

    @dg.multi_asset(
        specs=[dg.AssetSpec("model", skippable=True)],
        check_specs=[dg.AssetCheckSpec(check.name, asset="model", blocking=True)],
        can_subset=True,
    )
    def build(context: dg.AssetExecutionContext):
        yield dg.Output(None, output_name="model")
        evaluation = dg.AssetCheckEvaluation(
            asset_key=check.asset_key, check_name=check.name, passed=True, blocking=True
        )
        yield on_latest_materialization(evaluation, context.instance, {})

    job = dg.define_asset_job("refresh", dg.AssetSelection.all() - dg.AssetSelection.checks(check))
    defs = dg.Definitions(assets=[build], jobs=[job])
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("refresh").execute_in_process(instance=instance)
        planned = instance.all_logs(
            result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
        )
        (materialization,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=check.asset_key), limit=1
        ).records
        execution = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])
    assert not planned
    evaluation = execution[check].evaluation
    assert evaluation is not None and evaluation.passed
    assert evaluation.target_materialization_data.storage_id == materialization.storage_id
