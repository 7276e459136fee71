"""The nightly refresh: one job loads the latest days, rebuilds the marts and publishes them."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from incomaker_elt.contract.settings import Settings
from incomaker_elt.orchestration.partitions import (
    last_complete_day,
    last_partition_day,
    partition_range_tags,
)

REFRESH_JOB_NAME = "warehouse_refresh"
NIGHTLY_SCHEDULE_NAME = "nightly_warehouse_refresh"


def build_refresh_job(selection: dg.AssetSelection) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        REFRESH_JOB_NAME,
        selection=selection,
        description=(
            "Load the API into the raw tables, build staging and marts with dbt, reconcile them "
            "with the API's own aggregates and publish the serving warehouse for BI tools."
        ),
    )


def build_nightly_schedule(
    job: UnresolvedAssetJobDefinition,
    settings: Settings,
    refresh_days: int,
) -> dg.ScheduleDefinition:
    """Yesterday's partition, plus the `refresh_days` before it whose data can still change.

    Conversions are recorded up to 30 days late (docs/world.md): yesterday alone would freeze each
    day with the conversions known the morning after. Re-loading the partitions that can still
    change, in the same single run, keeps one partition = exactly one day fetched from the API.

    After nights without a successful refresh (the machine was off, a run failed), the range
    reaches back to the first day that could still change when the last successful whole-job run
    read it (`refresh_days` - 1 days before its last day). A range of today's 31 days would leave
    the days in between as that run saw them, for good (measured with bench/nightly.py: a
    conversion recorded 30 days late was missing a week later, a blocking check failed and 9
    marts differed from a full load).
    """

    @dg.schedule(
        name=NIGHTLY_SCHEDULE_NAME,
        job=job,
        cron_schedule=settings.schedule_cron,
        execution_timezone=settings.schedule_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Nightly at {settings.schedule_cron} ({settings.schedule_timezone}): yesterday's "
            f"partition and the {refresh_days} days before it, the unpartitioned raw tables, "
            "the dbt models, the checks and the serving warehouse."
        ),
    )
    def nightly_warehouse_refresh(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        # The source's last complete day at the scheduled time: "yesterday" for the real API.
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        last_day = last_complete_day(settings, scheduled)
        first_day = last_day - timedelta(days=refresh_days)
        last_refreshed = last_refreshed_day(context.instance)
        if last_refreshed is not None and last_refreshed < last_day:
            # Days up to last_refreshed - refresh_days were final when that run read them.
            first_day = min(first_day, last_refreshed - timedelta(days=refresh_days - 1))
        first_day = max(settings.partitions_start, first_day)
        if last_day < settings.partitions_start:
            return dg.SkipReason(
                f"no complete day since the partitions start ({settings.partitions_start})"
            )
        first, last = first_day.isoformat(), last_day.isoformat()
        return dg.RunRequest(
            run_key=f"nightly-{last}",
            tags={**partition_range_tags(first, last), "incomaker/trigger": "nightly"},
        )

    return nightly_warehouse_refresh


def last_refreshed_day(instance: dg.DagsterInstance) -> date | None:
    """The last day loaded by the newest successful run of the whole refresh job, if any.

    Runs of a part of the job (`incomaker-elt run --select`, a UI materialisation) do not count:
    they did not re-read every table."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=REFRESH_JOB_NAME, statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=20,
    )
    for record in records:
        if not record.dagster_run.asset_selection:  # None or empty: the whole job
            return last_partition_day(record.dagster_run.tags)
    return None
