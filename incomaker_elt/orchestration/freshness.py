"""Freshness of the raw tables: is the source's last complete day loaded?

One question for every raw table, relative to the source's own clock
(`incomaker_elt.orchestration.partitions.last_complete_day`): against the real API, by
INCOMAKER_FRESHNESS_DEADLINE_CRON (schedule timezone) yesterday's partition must be loaded and the
unpartitioned tables refreshed through yesterday; against a stand-in frozen at its today, that
today. So a stand-in's warehouse loaded through its today is fresh, whatever the calendar says.

A sensor evaluates the checks, in runs that only check. Dagster plans every check of an asset
into each backfill run of it (asset backfills ask for all checks of their assets; no setting opts
a check out), so the check itself declines to evaluate in a run that materialises assets: it
returns no result there, and the sensor evaluates it once that run's materialisations are in.
"""

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

from incomaker_elt.contract.settings import Settings
from incomaker_elt.orchestration.partitions import last_complete_day

if TYPE_CHECKING:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord

FRESHNESS_CHECK_NAME = "freshness_check"
FRESHNESS_SENSOR_NAME = "raw_freshness_checks_sensor"
EXPECTED_DAY = "expected_day"
"""Metadata of a check result: the day it expected loaded (the sensor re-evaluates on a new one)."""
LOADED_THROUGH = "loaded_through"
"""Metadata of an unpartitioned raw table's materialisation: the source's last complete day then."""
SENSOR_INTERVAL_SECONDS = 60


def expected_day(settings: Settings, now: datetime) -> date:
    """The day every raw table must be loaded through at `now`.

    A frozen source: its today. The real API: its last complete day as of the latest deadline
    (before 06:00 the day before yesterday is still enough).
    """
    # Dagster's own cron arithmetic, private: imported when a check or the sensor runs, not when
    # the definitions load.
    from dagster._utils.schedules import get_latest_completed_cron_tick

    if settings.source_today is not None:
        return settings.source_today
    zone = settings.schedule_timezone
    deadline = get_latest_completed_cron_tick(
        settings.freshness_deadline_cron, now.astimezone(ZoneInfo(zone)), zone
    )
    return last_complete_day(settings, deadline)


def _source(settings: Settings) -> str:
    if settings.source_today is None:
        return "the API's last complete day (yesterday, UTC)"
    return f"the source's today ({settings.source_today}, INCOMAKER_SOURCE_TODAY)"


def _loaded_through(settings: Settings, event: dg.EventLogEntry) -> date:
    materialization = event.asset_materialization
    value = materialization.metadata.get(LOADED_THROUGH) if materialization else None
    if value is not None:
        return date.fromisoformat(str(value.value))
    # Recorded before materialisations said it: the source's last complete day at that moment.
    return last_complete_day(settings, datetime.fromtimestamp(event.timestamp, UTC))


def _evaluate_partitioned(
    instance: dg.DagsterInstance, settings: Settings, key: dg.AssetKey, expected: date
) -> tuple[bool, str]:
    if expected < settings.partitions_start:
        return True, f"no day to expect yet: the partitions start on {settings.partitions_start}"
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[expected.isoformat()]), limit=1
    )
    if records.records:
        return True, f"partition {expected} ({_source(settings)}) is loaded"
    loaded = instance.get_materialized_partitions(key)
    newest = max(loaded) if loaded else None
    return False, (
        f"partition {expected} ({_source(settings)}) is not loaded; "
        + (f"the newest loaded day is {newest}" if newest else "no day was ever loaded")
        + ". The nightly run loads it; or materialise that partition."
    )


def _evaluate_unpartitioned(
    instance: dg.DagsterInstance, settings: Settings, key: dg.AssetKey, expected: date
) -> tuple[bool, str]:
    event = instance.get_latest_materialization_event(key)
    if event is None:
        return False, "never loaded. The nightly run loads it; or materialise it."
    through = _loaded_through(settings, event)
    if through >= expected:
        return True, f"refreshed through {through}; {_source(settings)} is {expected}"
    return False, (
        f"last refreshed through {through}, but {_source(settings)} is {expected}. "
        "The nightly run refreshes it; or materialise it."
    )


def build_freshness_checks(
    settings: Settings,
    partitioned: Sequence[dg.AssetsDefinition],
    unpartitioned: Sequence[dg.AssetsDefinition],
) -> list[dg.AssetChecksDefinition]:
    """One `freshness_check` per raw table, all in one multi-check the sensor runs."""
    daily = {key for assets in partitioned for key in assets.keys}
    keys = [*daily, *(key for assets in unpartitioned for key in assets.keys)]
    specs = [
        dg.AssetCheckSpec(
            FRESHNESS_CHECK_NAME,
            asset=key,
            description=(
                "Loaded through the source's last complete day: yesterday for the real API "
                "(by INCOMAKER_FRESHNESS_DEADLINE_CRON), a frozen stand-in's today otherwise. "
                "Evaluated by the raw_freshness_checks_sensor, not in runs that load."
            ),
        )
        for key in sorted(keys, key=lambda k: k.to_user_string())
    ]

    @dg.multi_asset_check(
        specs=specs,
        can_subset=True,
        name="raw_freshness_checks",
        description="Is every raw table loaded through the source's last complete day?",
    )
    def raw_freshness_checks(
        context: dg.AssetCheckExecutionContext,
    ) -> Iterator[dg.AssetCheckResult]:
        loading = context.job_def.asset_layer.selected_asset_keys
        if loading:
            # A backfill or a materialisation planned us alongside its assets: not our moment.
            context.log.info(
                f"freshness not evaluated in a run that loads {len(loading)} asset(s); "
                f"the {FRESHNESS_SENSOR_NAME} evaluates it when they are in"
            )
            return
        expected = expected_day(settings, datetime.now(UTC))
        for check_key in sorted(context.selected_asset_check_keys, key=str):
            key = check_key.asset_key
            evaluate = _evaluate_partitioned if key in daily else _evaluate_unpartitioned
            passed, description = evaluate(context.instance, settings, key, expected)
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=FRESHNESS_CHECK_NAME,
                passed=passed,
                description=description,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    EXPECTED_DAY: expected.isoformat(),
                    "source_today": (
                        settings.source_today.isoformat()
                        if settings.source_today
                        else "the calendar's (real API)"
                    ),
                },
            )

    return [raw_freshness_checks]


# --------------------------------------------------------------------------------- the sensor


def _in_flight(instance: dg.DagsterInstance, record: "AssetCheckExecutionRecord | None") -> bool:
    """A run this sensor launched for the check has not finished yet."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    if record is None or record.status != AssetCheckExecutionRecordStatus.PLANNED:
        return False
    run = instance.get_run_by_id(record.run_id)
    return bool(
        run and not run.is_finished and run.tags.get("dagster/sensor_name") == FRESHNESS_SENSOR_NAME
    )


def checks_due(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], expected: date
) -> list[dg.AssetCheckKey]:
    """The checks whose answer may have changed since their last evaluation.

    Never evaluated; evaluated against another expected day (a deadline passed, or the source's
    today changed); or the table was loaded since. A check planned but left unevaluated by a
    backfill run counts as not evaluated by it.
    """
    summaries = instance.event_log_storage.get_asset_check_summary_records(list(keys))
    latest: Mapping[dg.AssetKey, dg.EventLogEntry | None] = (
        instance.get_latest_materialization_events(list({k.asset_key for k in keys}))
    )
    due = []
    for key in keys:
        summary = summaries.get(key)
        if summary and _in_flight(instance, summary.last_check_execution_record):
            continue
        completed = summary.last_completed_check_execution_record if summary else None
        evaluation = completed.evaluation if completed else None
        if completed is None or evaluation is None:
            due.append(key)
            continue
        said = evaluation.metadata.get(EXPECTED_DAY)
        loaded = latest.get(key.asset_key)
        if (said is None or said.value != expected.isoformat()) or (
            loaded is not None and completed.event and loaded.timestamp > completed.event.timestamp
        ):
            due.append(key)
    return due


def build_freshness_sensor(
    settings: Settings, checks: Sequence[dg.AssetChecksDefinition]
) -> dg.SensorDefinition:
    keys = [key for assets in checks for key in assets.check_keys]

    @dg.sensor(
        name=FRESHNESS_SENSOR_NAME,
        asset_selection=dg.AssetSelection.checks(*keys),
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Evaluates the raw tables' freshness checks in runs of their own: when never "
            "evaluated, when the expected day moves (a deadline passes, the source's today "
            "changes) and when a table was loaded since its last evaluation."
        ),
    )
    def raw_freshness_checks_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        expected = expected_day(settings, datetime.now(UTC))
        due = checks_due(context.instance, keys, expected)
        if not due:
            return dg.SkipReason(f"every freshness check is current (expected day {expected})")
        return dg.RunRequest(asset_check_keys=due, tags={"incomaker/trigger": "freshness"})

    return raw_freshness_checks_sensor
