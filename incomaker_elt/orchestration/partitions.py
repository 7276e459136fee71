"""Daily partitions of the date-windowed raw tables: one partition is one day of the API's data.

The last day is the source's, not the calendar's: the real API has every day up to yesterday
(UTC); a stand-in frozen at its `--today` (settings.source_today) has every day up to that one and
nothing after. `last_complete_day` is that one fact; the partitions end there, the nightly run
loads up to it and the freshness checks expect it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import dagster as dg

# Dagster's own run tags for a run over a range of partitions (what a single-run backfill sets),
# and for a run of one partition. Private names: this module is the one place that uses them.
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from incomaker_elt.contract.settings import ConfigurationError, Settings

API_TIMEZONE = "UTC"
"""The API's dates are UTC dates (docs/world.md, "Time"): partition 2026-06-29 is that UTC day."""


def last_complete_day(settings: Settings, now: datetime | None = None) -> date:
    """The newest day the source has whole: its frozen today, else yesterday (UTC) at `now`."""
    if settings.source_today is not None:
        return settings.source_today
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).date() - timedelta(days=1)


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from the partitions start to the source's last complete day.

    Against the real API the end moves with the clock (Dagster adds yesterday's partition at
    midnight UTC); against a frozen source it is fixed at the source's today.
    """
    today = settings.source_today
    if today is not None and today < settings.partitions_start:
        raise ConfigurationError(
            f"INCOMAKER_SOURCE_TODAY={today} is before INCOMAKER_PARTITIONS_START="
            f"{settings.partitions_start}: the source has no day to load; set a later today or "
            "an earlier start"
        )
    return dg.DailyPartitionsDefinition(
        start_date=settings.partitions_start.isoformat(),
        end_date=(today + timedelta(days=1)).isoformat() if today else None,
        timezone=API_TIMEZONE,
    )


def window_dates(window: dg.TimeWindow) -> tuple[date, date]:
    """The inclusive first and last day of a partition window (Dagster's end is exclusive)."""
    return window.start.date(), (window.end - timedelta(days=1)).date()


def day_ranges(partition_keys: set[str]) -> list[tuple[date, date]]:
    """Contiguous inclusive date ranges covering the given daily partition keys, in order."""
    days = sorted(date.fromisoformat(key) for key in partition_keys)
    ranges: list[tuple[date, date]] = []
    for day in days:
        if ranges and ranges[-1][1] + timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def partition_range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Run tags asking for one run over a range of daily partitions (single-run backfill)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first_key, ASSET_PARTITION_RANGE_END_TAG: last_key}


def last_partition_day(tags: Mapping[str, str]) -> date | None:
    """The last day a run's tags ask for: its partition range's end, or its one partition."""
    key = tags.get(ASSET_PARTITION_RANGE_END_TAG) or tags.get(PARTITION_NAME_TAG)
    return date.fromisoformat(key) if key else None
