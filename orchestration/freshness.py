"""Freshness checks on the raw tables: did last night's load happen?

Dagster's newer FreshnessPolicy is evaluated per asset, not per partition; these checks are
partition-aware (the latest complete day must be loaded) and show up as asset checks in the UI.
They watch the schedule, so a sensor evaluates them; runs do not execute them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

from incomaker_elt.settings import Settings

FRESHNESS_SENSOR_NAME = "raw_freshness_checks_sensor"


def build_freshness_checks(
    settings: Settings,
    partitioned: Sequence[dg.AssetsDefinition],
    unpartitioned: Sequence[dg.AssetsDefinition],
) -> list[dg.AssetChecksDefinition]:
    with warnings.catch_warnings():
        # Superseded by FreshnessPolicy, which cannot yet say "yesterday's partition is missing".
        warnings.simplefilter("ignore", category=dg.SupersessionWarning)
        return [
            *dg.build_time_partition_freshness_checks(
                assets=list(partitioned),
                deadline_cron=settings.freshness_deadline_cron,
                timezone=settings.schedule_timezone,
            ),
            *dg.build_last_update_freshness_checks(
                assets=list(unpartitioned),
                lower_bound_delta=timedelta(hours=24),
                deadline_cron=settings.freshness_deadline_cron,
                timezone=settings.schedule_timezone,
            ),
        ]


def build_freshness_sensor(checks: Sequence[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=list(checks),
            name=FRESHNESS_SENSOR_NAME,
            default_status=dg.DefaultSensorStatus.RUNNING,
        )
