"""SQL shared by several groups: activity metrics, visible conversions, and the operations that
campaigns and smartflow deliveries answer alike (recipients, activity, links, daily results,
conversions), written once for the `Source` of the sends."""

from __future__ import annotations

from dataclasses import dataclass

from incomaker_elt.contract.deliveries import API_DELIVERY_METRICS as METRIC_NAMES
from incomaker_elt.standin.operations.ask import Ask, Sql

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
    return f"(SELECT * FROM conversions WHERE recorded_date <= {a.bind('today', a.today)} {where})"


@dataclass(frozen=True)
class Source:
    """What sends come from: a campaign or a smartflow delivery."""

    what: str  # as the 404 names it
    table: str
    column: str
    field: str
    exists_from: str  # the column of the moment it shows in the API

    def asked(self, a: Ask, alias: str = "") -> str:
        """`AND` clause keeping the campaign (delivery) of the path, or those of the comma-list
        parameter when given."""
        if self.field in a.op.path_params:
            return f" AND {a.is_id(alias + self.column, self.field)}"
        return a.among(self.field, alias + self.column)

    def scope(self, a: Ask, alias: str = "") -> str:
        """`asked`, after checking that the campaign (delivery) of the path exists by today."""
        if self.field in a.op.path_params:
            a.require_created(self.field, self.table, self.column, self.what, self.exists_from)
        return self.asked(a, alias)


CAMPAIGN = Source("campaign", "campaigns", "campaign_id", "campaignId", "sent_at")
DELIVERY = Source("delivery", "deliveries", "delivery_id", "deliveryId", "created_at")


def recipient_statistics(source: Source, a: Ask) -> Sql:
    """Per send of one campaign or delivery: what the recipient did, as of today."""
    return a.sql(f"""
    SELECT s.send_id AS "sendId", s.{source.column} AS "{source.field}",
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
    WHERE s.sent_at < {a.cutoff} {source.scope(a, "s.")} {a.window("s.sent_at::DATE")}
    GROUP BY ALL
    """)


def activity_list(source: Source, a: Ask) -> Sql:
    return a.sql(f"""
    SELECT event_id AS "eventId", send_id AS "sendId", {source.column} AS "{source.field}",
           contact_id AS "contactId", event_type AS "eventType", occurred_at AS "occurredAt", url
    FROM events
    WHERE occurred_at < {a.cutoff} AND {source.column} IS NOT NULL {source.scope(a)}
          {a.window("occurred_at::DATE")}
    """)


def link_clicks(source: Source, a: Ask) -> Sql:
    return a.sql(f"""
    SELECT {source.column} AS "{source.field}", url, count(*) AS "clicks",
           count(DISTINCT send_id) AS "uniqueClicks"
    FROM events
    WHERE occurred_at < {a.cutoff} AND event_type = 'clicked' {source.scope(a)}
          {a.window("occurred_at::DATE")}
    GROUP BY ALL
    """)


def daily_results(source: Source, a: Ask) -> Sql:
    return a.sql(f"""
    SELECT occurred_at::DATE AS "date", {source.column} AS "{source.field}", {METRICS}
    FROM events
    WHERE occurred_at < {a.cutoff} AND {source.column} IS NOT NULL {source.scope(a)}
          {a.window("occurred_at::DATE")}
    GROUP BY ALL
    """)


def source_conversions(source: Source, a: Ask) -> Sql:
    return a.sql(conversion_rows(a, f" AND {source.column} IS NOT NULL {source.scope(a)}"))


def conversion_rows(a: Ask, where: str = "") -> str:
    """Conversions recorded by today, with the columns the operation's catalogue entry names,
    in the date window and of the countries and currencies asked for."""
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
    select = ", ".join(f'{columns[f]} AS "{f}"' for f in a.op.fields)
    return f"""
    SELECT {select} FROM {visible_conversions(a)}
    WHERE true {where} {conversion_filters(a)}
    """


def conversion_filters(a: Ask) -> str:
    """`AND` clauses for the date window and the countries and currencies asked for."""
    return a.window("date") + a.among("country", "country") + a.among("currency", "currency")
