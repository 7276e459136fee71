"""SQL shared by several groups: activity metrics, recipient statistics, visible conversions."""

from __future__ import annotations

from incomaker_elt.contract.deliveries import API_DELIVERY_METRICS as METRIC_NAMES
from incomaker_elt.standin.operations.ask import Ask

# Counts of activity events (docs/world.md, "Sends, activity and results"): unique* count
# distinct sends with at least one such event among the events grouped.
METRICS = """
    count(*) FILTER (WHERE event_type = 'sent') AS "sent",
    count(*) FILTER (WHERE event_type = 'delivered') AS "delivered",
    count(*) FILTER (WHERE event_type = 'bounced') AS "bounced",
    count(*) FILTER (WHERE event_type = 'opened') AS "opened",
    count(DISTINCT send_id) FILTER (WHERE event_type = 'opened') AS "uniqueOpened",
    count(*) FILTER (WHERE event_type = 'clicked') AS "clicked",
    count(DISTINCT send_id) FILTER (WHERE event_type = 'clicked') AS "uniqueClicked",
    count(*) FILTER (WHERE event_type = 'unsubscribed') AS "unsubscribed"
"""


def zero_filled(alias: str, names: tuple[str, ...] = METRIC_NAMES) -> str:
    """Metrics of a left/full-joined relation, 0 where it had no row."""
    return ", ".join(f'coalesce({alias}."{n}", 0) AS "{n}"' for n in names)


def events_by_today(a: Ask, where: str = "") -> str:
    """Activity that had happened by the end of today."""
    return f"(SELECT * FROM events WHERE occurred_at < {a.cutoff} {where})"


def visible_conversions(a: Ask, where: str = "") -> str:
    """Conversions recorded by today (a day's conversions keep arriving for 30 days)."""
    return f"(SELECT * FROM conversions WHERE recorded_date <= {a.today_sql} {where})"


def recipient_statistics(a: Ask, source_column: str, source_field: str, where: str) -> str:
    """Per send of one campaign or delivery: what the recipient did, as of today."""
    return f"""
    SELECT s.send_id AS "sendId", s.{source_column} AS "{source_field}",
           s.contact_id AS "contactId", c.email, s.sent_at AS "sentAt",
           count(e.event_id) FILTER (WHERE e.event_type = 'delivered') > 0 AS "delivered",
           count(e.event_id) FILTER (WHERE e.event_type = 'bounced') > 0 AS "bounced",
           count(e.event_id) FILTER (WHERE e.event_type = 'opened') AS "opens",
           count(e.event_id) FILTER (WHERE e.event_type = 'clicked') AS "clicks",
           count(e.event_id) FILTER (WHERE e.event_type = 'unsubscribed') > 0 AS "unsubscribed",
           min(e.occurred_at) FILTER (WHERE e.event_type = 'opened') AS "firstOpenedAt",
           min(e.occurred_at) FILTER (WHERE e.event_type = 'clicked') AS "firstClickedAt"
    FROM sends s
    JOIN contacts c USING (contact_id)
    LEFT JOIN events e ON e.send_id = s.send_id AND e.occurred_at < {a.cutoff}
    WHERE s.sent_at < {a.cutoff} {where}
    GROUP BY ALL
    """


def activity_list(a: Ask, source_column: str, source_field: str, where: str) -> str:
    return f"""
    SELECT event_id AS "eventId", send_id AS "sendId", {source_column} AS "{source_field}",
           contact_id AS "contactId", event_type AS "eventType", occurred_at AS "occurredAt", url
    FROM events
    WHERE occurred_at < {a.cutoff} AND {source_column} IS NOT NULL {where}
    """


def link_clicks(a: Ask, source_column: str, source_field: str, where: str) -> str:
    return f"""
    SELECT {source_column} AS "{source_field}", url, count(*) AS "clicks",
           count(DISTINCT send_id) AS "uniqueClicks"
    FROM events
    WHERE occurred_at < {a.cutoff} AND event_type = 'clicked' {where}
    GROUP BY ALL
    """


def daily_results(a: Ask, source_column: str, source_field: str, where: str) -> str:
    return f"""
    SELECT occurred_at::DATE AS "date", {source_column} AS "{source_field}", {METRICS}
    FROM events
    WHERE occurred_at < {a.cutoff} AND {source_column} IS NOT NULL {where}
    GROUP BY ALL
    """


def conversion_rows(a: Ask, where: str, fields: dict[str, str]) -> str:
    """Conversions recorded by today, with the columns the operation's catalogue entry names."""
    columns = {
        "conversionId": "conversion_id",
        "contactId": "contact_id",
        "orderId": "order_id",
        "campaignId": "campaign_id",
        "deliveryId": "delivery_id",
        "date": "date",
        "createdAt": "recorded_at",
        "country": "country",
        "currency": "currency",
        "conversionAmountWoTax": "amount_wo",
        "conversionAmountWTax": "amount_w",
        "conversionAmountWoTaxReference": "amount_wo_ref",
        "conversionAmountWTaxReference": "amount_w_ref",
    }
    select = ", ".join(f'{columns[f]} AS "{f}"' for f in fields)
    return f"SELECT {select} FROM {visible_conversions(a)} WHERE true {where}"
