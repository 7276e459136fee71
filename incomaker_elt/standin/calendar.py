"""The world's time: its horizon and the default "today" (docs/world.md, "Time").

Generation works in integer seconds since the Unix epoch (UTC); DuckDB holds TIMESTAMPs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

HORIZON_START = date(2025, 1, 1)
HORIZON_END = date(2026, 12, 31)
DEFAULT_TODAY = date(2026, 6, 30)

DAY = 86_400
HOUR = 3_600


def epoch_seconds(d: date) -> int:
    """Seconds since the epoch at the start (00:00 UTC) of day `d`."""
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


HORIZON_START_TS = epoch_seconds(HORIZON_START)
HORIZON_END_TS = epoch_seconds(HORIZON_END + timedelta(days=1))  # exclusive: end of the last day
HORIZON_DAYS = (HORIZON_END - HORIZON_START).days + 1


def check_today(today: date) -> date:
    """`today` as a date inside the horizon, or a ValueError saying what is allowed."""
    if isinstance(today, datetime):
        today = today.date()
    if not isinstance(today, date):
        raise ValueError(f"today must be a date, not {type(today).__name__}")
    if not HORIZON_START <= today <= HORIZON_END:
        raise ValueError(
            f"today {today.isoformat()} is outside the stand-in world's horizon "
            f"{HORIZON_START.isoformat()}..{HORIZON_END.isoformat()}; pick a date inside it"
        )
    return today
