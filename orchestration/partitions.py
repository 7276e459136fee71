"""Daily partitions of the date-windowed raw tables: one partition is one day of the API's data."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from incomaker_elt.settings import Settings

API_TIMEZONE = "UTC"
"""The API's dates are UTC dates (docs/world.md, "Time"): partition 2026-06-29 is that UTC day."""


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=settings.partitions_start.isoformat(), timezone=API_TIMEZONE
    )


def window_dates(window: dg.TimeWindow) -> tuple[date, date]:
    """The inclusive first and last day of a partition window (Dagster's end is exclusive)."""
    first = window.start.date()
    last = (window.end - timedelta(days=1)).date()
    return first, last


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
