"""What the subcommands of every stage read from the command line the same way."""

import argparse
from datetime import date


def iso_date(value: str) -> date:
    """An argparse type: a day written as an ISO date, else argparse's error naming the value."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        message = f"{value!r} is not an ISO date such as 2026-06-30"
        raise argparse.ArgumentTypeError(message) from None
