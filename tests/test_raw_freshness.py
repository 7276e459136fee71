"""Freshness of the raw tables relative to the source's own today, evaluated by its sensor only.

A stand-in is frozen at its today (2026-06-30 here, long before the calendar's): loaded through
that day, a raw table is fresh. A run that loads (a backfill) never evaluates the checks; the
sensor asks for them afterwards.
"""

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
from api_pages import standin_settings

from incomaker_elt.contract.catalogue import load_catalogue
from incomaker_elt.contract.settings import ConfigurationError, Settings
from incomaker_elt.orchestration.freshness import (
    FRESHNESS_CHECK_NAME,
    build_freshness_checks,
    build_freshness_sensor,
    checks_due,
    expected_day,
)
from incomaker_elt.orchestration.ingestion_assets import build_raw_assets
from incomaker_elt.orchestration.partitions import daily_partitions, last_complete_day
from incomaker_elt.orchestration.resources import IncomakerApi, api_resource
from incomaker_elt.orchestration.schedules import partition_range_tags
from incomaker_elt.standin import StandIn

CATALOGUE = load_catalogue()
TOKEN = "standin-token"
STANDIN_TODAY = date(2026, 6, 30)


def _raw(name: str) -> dg.AssetKey:
    return dg.AssetKey(["incomaker_raw", name])


def _check(name: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(_raw(name), FRESHNESS_CHECK_NAME)


def _settings(tmp: Path, **changes) -> Settings:
    return dataclasses.replace(standin_settings(tmp, TOKEN), **changes)


# ------------------------------------------------------------------ the source's last day


def test_the_real_apis_last_day_is_yesterday_and_a_frozen_sources_is_its_today(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    real = _settings(tmp_path, source_today=None)
    frozen = _settings(tmp_path, source_today=STANDIN_TODAY)
    assert last_complete_day(real, now) == date(2026, 11, 29)
    assert last_complete_day(frozen, now) == STANDIN_TODAY
    assert daily_partitions(frozen).get_last_partition_key() == "2026-06-30"
    assert daily_partitions(real).get_last_partition_key() >= "2026-11-29"
    with pytest.raises(ConfigurationError, match="INCOMAKER_SOURCE_TODAY=2024-12-31"):
        daily_partitions(_settings(tmp_path, source_today=date(2024, 12, 31)))


def test_freshness_expects_yesterday_after_the_deadline_and_a_frozen_today_always(
    tmp_path: Path,
) -> None:
    real = _settings(tmp_path, source_today=None)  # deadline 06:00 Europe/Prague
    before = datetime(2026, 11, 30, 4, 59, tzinfo=UTC)  # 05:59 in Prague
    after = datetime(2026, 11, 30, 5, 1, tzinfo=UTC)
    assert expected_day(real, before) == date(2026, 11, 28)
    assert expected_day(real, after) == date(2026, 11, 29)
    frozen = _settings(tmp_path, source_today=STANDIN_TODAY)
    assert expected_day(frozen, after) == STANDIN_TODAY


def test_the_nightly_run_against_a_frozen_source_loads_up_to_its_today(tmp_path: Path) -> None:
    from incomaker_elt.orchestration.schedules import build_nightly_schedule, build_refresh_job

    settings = _settings(tmp_path, source_today=STANDIN_TODAY)
    schedule = build_nightly_schedule(build_refresh_job(dg.AssetSelection.all()), settings, 30)
    tick = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context,
    ):
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.tags["dagster/asset_partition_range_end"] == "2026-06-30"


# ------------------------------------------------------------- against the frozen stand-in


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, small_world):
    """The stand-in's today loaded for one partitioned and one unpartitioned table, as a
    backfill runs: the freshness checks planned with the assets."""
    service = StandIn(small_world, token=TOKEN)
    with service.serve(host="127.0.0.1", port=0) as base_url:
        settings = _settings(
            tmp_path_factory.mktemp("freshness"), base_url=base_url, source_today=STANDIN_TODAY
        )
        events, snapshots = build_raw_assets(settings, CATALOGUE, daily_partitions(settings))
        checks = build_freshness_checks(settings, [events], [snapshots])
        instance = dg.DagsterInstance.ephemeral()
        backfill = dg.materialize(
            [events, *checks],
            selection=dg.AssetSelection.assets(_raw("conversions")),  # its checks ride along
            resources={"incomaker_api": api_resource(settings)},
            instance=instance,
            tags=partition_range_tags("2026-06-29", "2026-06-30"),
        )
        snapshot = dg.materialize(
            [snapshots, *checks],
            selection=dg.AssetSelection.assets(_raw("senders")),
            resources={"incomaker_api": api_resource(settings)},
            instance=instance,
        )
        yield settings, events, snapshots, checks, instance, backfill, snapshot
        instance.dispose()


def _evaluations(result) -> dict[dg.AssetCheckKey, object]:
    return {
        dg.AssetCheckKey(e.asset_key, e.check_name): e
        for e in (
            event.asset_check_evaluation_data
            for event in result.all_events
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    }


def _check_run(events, snapshots, checks, instance, keys):
    """What the sensor's run request becomes: a run of the checks alone."""
    # The raw assets need the API resource to be defined; a run of the checks never asks it.
    resources = {"incomaker_api": IncomakerApi()}
    defs = dg.Definitions(assets=[events, snapshots], asset_checks=checks, resources=resources)
    job = defs.resolve_implicit_global_asset_job_def()
    return job.get_subset(asset_check_selection=set(keys)).execute_in_process(instance=instance)


def test_a_run_that_loads_does_not_evaluate_freshness(loaded) -> None:
    *_, backfill, snapshot = loaded
    for result in (backfill, snapshot):
        assert result.success
        assert result.get_asset_materialization_events()
        assert _evaluations(result) == {}


def test_loaded_through_the_stand_ins_today_is_fresh_whatever_the_calendar(loaded) -> None:
    settings, events, snapshots, checks, instance, *_ = loaded
    keys = [_check("conversions"), _check("senders"), _check("orders"), _check("contacts")]
    result = _check_run(events, snapshots, checks, instance, keys)
    evaluations = _evaluations(result)
    assert set(evaluations) == set(keys)
    assert evaluations[_check("conversions")].passed
    assert evaluations[_check("senders")].passed
    assert not evaluations[_check("orders")].passed  # never loaded
    assert "2026-06-30" in evaluations[_check("orders")].description
    assert not evaluations[_check("contacts")].passed
    assert evaluations[_check("conversions")].metadata["expected_day"].value == "2026-06-30"


def test_the_sensor_asks_again_only_when_the_answer_can_have_changed(loaded) -> None:
    settings, events, snapshots, checks, instance, *_ = loaded
    sensor = build_freshness_sensor(settings, checks)
    keys = [key for assets in checks for key in assets.check_keys]
    due = set(checks_due(instance, keys, STANDIN_TODAY))
    assert _check("order_detail") in due  # never evaluated
    with dg.build_sensor_context(instance=instance) as context:
        request = sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert set(request.asset_check_keys or []) == due
    _check_run(events, snapshots, checks, instance, due)
    assert checks_due(instance, keys, STANDIN_TODAY) == []
    # Another expected day (a deadline passed, or the stand-in's today moved): all of them again.
    assert set(checks_due(instance, keys, date(2026, 7, 1))) == set(keys)
    # A table loaded since its last evaluation: that one.
    dg.materialize(
        [snapshots],
        selection=dg.AssetSelection.assets(_raw("senders")),
        resources={"incomaker_api": api_resource(settings)},
        instance=instance,
    )
    assert checks_due(instance, keys, STANDIN_TODAY) == [_check("senders")]
