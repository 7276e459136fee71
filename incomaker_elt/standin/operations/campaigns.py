"""Campaigns: one-off sends to a segment, their results, recipients, A/B tests and senders."""

from __future__ import annotations

from functools import partial
from typing import Any

from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql
from incomaker_elt.standin.operations.common import (
    CAMPAIGN,
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
    ("campaigns_daily_results", daily_results),
    ("campaign_conversions", source_conversions),
    ("campaign_recipients", recipient_statistics),
    ("campaign_recipient_activity", activity_list),
    ("campaign_link_clicks", link_clicks),
):
    handles(name)(partial(handler, CAMPAIGN))


@handles("campaigns")
def campaigns(a: Ask) -> Sql:
    return a.sql(f"""
        WITH recipients AS (
            SELECT campaign_id, count(*) AS n FROM sends
            WHERE campaign_id IS NOT NULL AND sent_at < {a.cutoff} GROUP BY campaign_id
        )
        SELECT c.campaign_id AS "campaignId", c.name, c.subject, c.language,
               c.sender_id AS "senderId", c.segment_id AS "segmentId", c.sent_at AS "sentAt",
               c.ab_test_id IS NOT NULL AS "abTest", coalesce(r.n, 0) AS "recipientsCount"
        FROM campaigns c LEFT JOIN recipients r USING (campaign_id)
        WHERE c.sent_at < {a.cutoff} {a.window("c.sent_at::DATE")}
              {a.among("language", "c.language")}
    """)


@handles("campaigns_by_language")
def campaigns_by_language(a: Ask) -> Sql:
    """campaignsCount: campaigns sent in the range; metrics: their events in the range."""
    return a.sql(f"""
        WITH sent AS (
            SELECT language, count(*) AS n FROM campaigns
            WHERE sent_at < {a.cutoff} {a.window("sent_at::DATE")} GROUP BY language
        ),
        metrics AS (
            SELECT c.language, {METRICS}
            FROM {events_by_today(a, a.window("occurred_at::DATE"))} e
            JOIN campaigns c USING (campaign_id)
            GROUP BY c.language
        )
        SELECT language, coalesce(s.n, 0) AS "campaignsCount", {zero_filled("m")}
        FROM sent s FULL JOIN metrics m USING (language)
    """)


@handles("campaigns_monthly_summary")
def campaigns_monthly_summary(a: Ask) -> Sql:
    counted = ("sent", "delivered", "opened", "clicked", "unsubscribed")
    return a.sql(f"""
        WITH sent AS (
            SELECT strftime(sent_at, '%Y-%m') AS month, count(*) AS n FROM campaigns
            WHERE sent_at < {a.cutoff} {a.window("sent_at::DATE")} GROUP BY month
        ),
        metrics AS (
            SELECT strftime(occurred_at, '%Y-%m') AS month, {METRICS}
            FROM {events_by_today(a, "AND campaign_id IS NOT NULL" + a.window("occurred_at::DATE"))}
            GROUP BY month
        ),
        converted AS (
            SELECT strftime(date, '%Y-%m') AS month, count(*) AS n,
                   sum(amount_w_ref)::BIGINT AS w_ref
            FROM {visible_conversions(a, "AND campaign_id IS NOT NULL" + a.window("date"))}
            GROUP BY month
        )
        SELECT month, coalesce(s.n, 0) AS "campaignsCount", {zero_filled("m", counted)},
               coalesce(v.n, 0) AS "conversionsNumber",
               coalesce(v.w_ref, 0) AS "conversionsAmountWTaxReference"
        FROM sent s FULL JOIN metrics m USING (month) FULL JOIN converted v USING (month)
    """)


def _histogram(field: str, bucket: str, a: Ask) -> Sql:
    """Opens and clicks of campaign e-mails per hour of the day (UTC), day or month."""
    where = (
        "AND campaign_id IS NOT NULL AND event_type IN ('opened', 'clicked')"
        + a.window("occurred_at::DATE")
        + CAMPAIGN.asked(a)
    )
    counted = f"""
        SELECT {bucket} AS "{field}",
               count(*) FILTER (WHERE event_type = 'opened') AS "opened",
               count(*) FILTER (WHERE event_type = 'clicked') AS "clicked"
        FROM {events_by_today(a, where)} GROUP BY ALL
    """
    if field != "hour":
        return a.sql(counted)
    # all 24 hours, zero where nothing happened
    return a.sql(f"""
        SELECT h.range AS "hour", coalesce(c.opened, 0) AS "opened",
               coalesce(c.clicked, 0) AS "clicked"
        FROM range(24) h LEFT JOIN ({counted}) c ON c.hour = h.range
    """)


for name, field, bucket in (
    ("campaigns_hourly_histogram", "hour", "hour(occurred_at)"),
    ("campaigns_daily_histogram", "date", "occurred_at::DATE"),
    ("campaigns_monthly_histogram", "month", "strftime(occurred_at, '%Y-%m')"),
):
    handles(name)(partial(_histogram, field, bucket))


@handles("senders")
def senders(a: Ask) -> Sql:
    return a.sql('SELECT sender_id AS "senderId", name, email, verified FROM senders')


@handles("campaign_contacts_timeline")
def campaign_contacts_timeline(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT campaign_id AS "campaignId", date_trunc('hour', occurred_at) AS "hour",
               count(DISTINCT contact_id) FILTER (WHERE event_type = 'opened') AS "contactsOpened",
               count(DISTINCT contact_id) FILTER (WHERE event_type = 'clicked')
                   AS "contactsClicked"
        FROM {events_by_today(a, CAMPAIGN.scope(a) + " AND event_type IN ('opened', 'clicked')")}
        GROUP BY ALL
    """)


@handles("campaign_contacts")
def campaign_contacts(a: Ask) -> Sql:
    return a.sql(f"""
        WITH converted AS (
            SELECT DISTINCT campaign_id, contact_id
            FROM {visible_conversions(a, CAMPAIGN.scope(a))}
        )
        SELECT s.campaign_id AS "campaignId", s.contact_id AS "contactId", c.email,
               count(e.event_id) FILTER (WHERE e.event_type = 'opened') > 0 AS "opened",
               count(e.event_id) FILTER (WHERE e.event_type = 'clicked') > 0 AS "clicked",
               bool_or(v.contact_id IS NOT NULL) AS "converted"
        FROM sends s
        JOIN contacts c USING (contact_id)
        LEFT JOIN events e ON e.send_id = s.send_id AND e.occurred_at < {a.cutoff}
        LEFT JOIN converted v ON v.contact_id = s.contact_id AND v.campaign_id = s.campaign_id
        WHERE s.sent_at < {a.cutoff} {CAMPAIGN.asked(a, "s.")}
        GROUP BY ALL
    """)


@handles("contacts_for_period")
def contacts_for_period(a: Ask) -> Sql:
    """Per day and contact: campaign e-mails received, opens and clicks that day."""
    where = "AND campaign_id IS NOT NULL" + a.window("occurred_at::DATE")
    return a.sql(f"""
        SELECT occurred_at::DATE AS "date", contact_id AS "contactId",
               count(*) FILTER (WHERE event_type = 'sent') AS "campaignsReceived",
               count(*) FILTER (WHERE event_type = 'opened') AS "opened",
               count(*) FILTER (WHERE event_type = 'clicked') AS "clicked"
        FROM {events_by_today(a, where)}
        WHERE event_type IN ('sent', 'opened', 'clicked')
        GROUP BY ALL
    """)


@handles("campaign_ab_tests")
def campaign_ab_tests(a: Ask) -> list[dict[str, Any]]:
    """Each A/B test with its two variants; the winner has more unique opens (A on a tie)."""
    tests = a.arrow(f"""
        SELECT ab_test_id AS "abTestId", campaign_id AS "campaignId", sent_at AS "sentAt",
               NULL AS "winnerVariant"
        FROM campaigns
        WHERE ab_test_id IS NOT NULL AND sent_at < {a.cutoff} {a.window("sent_at::DATE")}
    """).to_pylist()
    counted = ("sent", "opened", "uniqueOpened", "clicked", "uniqueClicked")
    variants = f"""
        WITH metrics AS (
            SELECT s.campaign_id, s.variant, {METRICS}
            FROM sends s JOIN events e USING (send_id)
            WHERE s.variant IS NOT NULL AND e.occurred_at < {a.cutoff}
            GROUP BY ALL
        )
        SELECT c.ab_test_id AS "abTestId", v.variant,
               CASE v.variant WHEN 'A' THEN c.subject ELSE c.subject_b END AS "subject",
               {zero_filled("m", counted)}
        FROM campaigns c CROSS JOIN (VALUES ('A'), ('B')) v(variant)
        LEFT JOIN metrics m ON m.campaign_id = c.campaign_id AND m.variant = v.variant
        WHERE c.ab_test_id IS NOT NULL
        ORDER BY c.ab_test_id, v.variant
    """
    a.nest(tests, "abTestId", "variants", variants)
    for test in tests:
        variant_a, variant_b = test["variants"]
        test["winnerVariant"] = (
            "B" if variant_b["uniqueOpened"] > variant_a["uniqueOpened"] else "A"
        )
    return tests
