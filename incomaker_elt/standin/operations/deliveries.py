"""Smartflow deliveries: e-mails sent every day by a flow, their activity and conversions."""

from __future__ import annotations

from functools import partial

from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql
from incomaker_elt.standin.operations.common import (
    DELIVERY,
    METRICS,
    activity_list,
    daily_results,
    events_by_today,
    link_clicks,
    recipient_statistics,
    source_conversions,
    visible_conversions,
    zero_filled,
)

for name, handler in (
    ("deliveries_daily_results", daily_results),
    ("delivery_conversions", source_conversions),
    ("delivery_specific_conversions", source_conversions),
    ("delivery_recipients", recipient_statistics),
    ("delivery_recipient_activity", activity_list),
    ("delivery_link_clicks", link_clicks),
):
    handles(name)(partial(handler, DELIVERY))


@handles("deliveries")
def deliveries(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT delivery_id AS "deliveryId", smartflow_id AS "smartflowId",
               smartflow_name AS "smartflowName", name, subject, language,
               sender_id AS "senderId", created_at AS "createdAt",
               (retired_at IS NULL OR retired_at >= {a.cutoff}) AS "active"
        FROM deliveries
        WHERE created_at < {a.cutoff} {a.among("language", "language")}
    """)


@handles("delivery_detail")
def delivery_detail(a: Ask) -> Sql:
    """Totals over all of the delivery's activity and conversions by today (zero without any)."""
    return a.sql(f"""
        WITH metrics AS (
            SELECT delivery_id, {METRICS} FROM {events_by_today(a, DELIVERY.scope(a))}
            GROUP BY delivery_id
        ),
        converted AS (
            SELECT delivery_id, count(*) AS n, sum(amount_wo_ref)::BIGINT AS wo,
                   sum(amount_w_ref)::BIGINT AS w
            FROM {visible_conversions(a, DELIVERY.asked(a))}
            GROUP BY delivery_id
        )
        SELECT d.delivery_id AS "deliveryId", d.smartflow_id AS "smartflowId", d.name,
               d.language, {zero_filled("m")}, coalesce(v.n, 0) AS "conversionsNumber",
               coalesce(v.wo, 0) AS "conversionAmountWoTaxReference",
               coalesce(v.w, 0) AS "conversionAmountWTaxReference"
        FROM deliveries d
        LEFT JOIN metrics m ON m.delivery_id = d.delivery_id
        LEFT JOIN converted v ON v.delivery_id = d.delivery_id
        WHERE {a.is_id("d.delivery_id", "deliveryId")}
    """)


@handles("deliveries_by_language")
def deliveries_by_language(a: Ask) -> Sql:
    """deliveriesCount: deliveries that sent at least one e-mail in the range."""
    return a.sql(f"""
        SELECT d.language, count(DISTINCT e.delivery_id) FILTER (WHERE e.event_type = 'sent')
                   AS "deliveriesCount", {METRICS}
        FROM {events_by_today(a, "AND delivery_id IS NOT NULL" + a.window("occurred_at::DATE"))} e
        JOIN deliveries d USING (delivery_id)
        GROUP BY d.language
    """)


@handles("smartflow_daily_detail")
def smartflow_daily_detail(a: Ask) -> Sql:
    """Per day and delivery of one smartflow: activity by event date, conversions by date."""
    a.require_created("smartflowId", "deliveries", "smartflow_id", "smartflow")
    counted = ("sent", "delivered", "opened", "clicked", "unsubscribed")
    return a.sql(f"""
        WITH flow AS (
            SELECT delivery_id, smartflow_id FROM deliveries
            WHERE {a.is_id("smartflow_id", "smartflowId")}
        ),
        metrics AS (
            SELECT occurred_at::DATE AS date, delivery_id, {METRICS}
            FROM {events_by_today(a, a.window("occurred_at::DATE"))}
            WHERE delivery_id IN (SELECT delivery_id FROM flow)
            GROUP BY ALL
        ),
        converted AS (
            SELECT date, delivery_id, count(*) AS n, sum(amount_w_ref)::BIGINT AS w
            FROM {visible_conversions(a, a.window("date"))}
            WHERE delivery_id IN (SELECT delivery_id FROM flow)
            GROUP BY ALL
        )
        SELECT f.smartflow_id::BIGINT AS "smartflowId", date, delivery_id AS "deliveryId",
               {zero_filled("m", counted)}, coalesce(v.n, 0) AS "conversionsNumber",
               coalesce(v.w, 0) AS "conversionAmountWTaxReference"
        FROM metrics m FULL JOIN converted v USING (date, delivery_id)
        JOIN flow f USING (delivery_id)
    """)
