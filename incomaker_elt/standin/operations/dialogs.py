"""Dialogs (pop-ups, banners, forms) and their daily views, submissions and closes."""

from __future__ import annotations

from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql


@handles("dialogs")
def dialogs(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT dialog_id AS "dialogId", name, type, created_at AS "createdAt",
               (retired_at IS NULL OR retired_at >= {a.cutoff}) AS "active"
        FROM dialogs WHERE created_at < {a.cutoff}
    """)


@handles("dialogs_data")
def dialogs_data(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT day_ts::DATE AS "date", dialog_id AS "dialogId", views, submissions, closes
        FROM dialog_days
        WHERE day_ts < {a.cutoff} {a.window("day_ts::DATE")} {a.among("dialogId", "dialog_id")}
    """)
