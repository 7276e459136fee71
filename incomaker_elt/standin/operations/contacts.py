"""Contacts, their data quality lists, gender statistics, recommendations, and segments."""

from __future__ import annotations

from typing import Any

from incomaker_elt.standin.errors import bad_parameter
from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql
from incomaker_elt.standin.operations.products import recommendations


def _contacts_as_of_today(a: Ask) -> str:
    """Contacts created by today, with order figures and unsubscribe as of today."""
    return f"""
        WITH bought AS (
            SELECT contact_id, count(*) AS orders_count, min(created_at) AS first_order_at,
                   max(created_at) AS last_order_at, sum(amount_w_ref)::BIGINT AS spent
            FROM orders WHERE created_at < {a.cutoff} GROUP BY contact_id
        )
        SELECT c.*, coalesce(b.orders_count, 0) AS orders_count, b.first_order_at,
               b.last_order_at, coalesce(b.spent, 0) AS spent,
               CASE WHEN c.unsubscribed_at < {a.cutoff} THEN c.unsubscribed_at END AS left_at,
               greatest(c.created_at, left_at, b.last_order_at) AS updated_at
        FROM contacts c LEFT JOIN bought b USING (contact_id)
        WHERE c.created_at < {a.cutoff}
    """


CONTACT_COLUMNS = """
    contact_id AS "contactId", email, first_name AS "firstName", last_name AS "lastName",
    language, gender, country, created_at AS "createdAt", updated_at AS "updatedAt",
    left_at IS NOT NULL AS "unsubscribed"
"""


@handles("contacts")
def contacts(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT {CONTACT_COLUMNS}, orders_count AS "ordersCount", last_order_at AS "lastOrderAt"
        FROM ({_contacts_as_of_today(a)})
        WHERE true {a.window("updated_at::DATE")} {a.among("country", "country")}
              {a.among("language", "language")}
    """)


@handles("contacts_details")
def contacts_details(a: Ask) -> list[dict[str, Any]]:
    # In block mode, every contact of the block; the service picks the asked ones.
    if a.block is None and not a.params.get("ids"):
        raise bad_parameter("ids", "ids is required: a comma-separated list of contact ids")
    contacts = a.arrow(f"""
        SELECT {CONTACT_COLUMNS}, left_at AS "unsubscribedAt", orders_count AS "ordersCount",
               spent AS "totalSpentWTaxReference", first_order_at AS "firstOrderAt",
               last_order_at AS "lastOrderAt"
        FROM ({_contacts_as_of_today(a)})
        WHERE {a.is_id("contact_id", "ids")}
    """).to_pylist()
    segments = f"""
        SELECT m.contact_id AS "contactId", s.segment_id AS "segmentId", s.name
        FROM segment_members m JOIN segments s USING (segment_id)
        WHERE {a.is_id("m.contact_id", "ids")} AND s.created_at < {a.cutoff}
        ORDER BY m.contact_id, s.segment_id
    """
    return a.nest(contacts, "contactId", "segments", segments)


@handles("contacts_recommendation")
def contacts_recommendation(a: Ask) -> Sql:
    """For each buyer, what goes with the first product of their latest order."""
    return a.sql(f"""
        WITH model AS ({recommendations(a)}),
        latest AS (
            SELECT contact_id, max(order_id) AS order_id
            FROM orders WHERE created_at < {a.cutoff} GROUP BY contact_id
        )
        SELECT l.contact_id AS "contactId", m.rank, m.recommended_product_id AS "productId",
               m.score
        FROM latest l
        JOIN order_items i ON i.order_id = l.order_id AND i.line_number = 1
        JOIN model m ON m.product_id = i.product_id
    """)


@handles("contacts_unsubscribed")
def contacts_unsubscribed(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT contact_id AS "contactId", email, unsubscribed_at AS "unsubscribedAt",
               unsubscribe_campaign_id AS "campaignId", unsubscribe_delivery_id AS "deliveryId"
        FROM contacts
        WHERE unsubscribed_at < {a.cutoff} AND created_at < {a.cutoff}
              {a.window("unsubscribed_at::DATE")}
    """)


@handles("contacts_duplicates")
def contacts_duplicates(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT contact_id AS "contactId", duplicate_of AS "duplicateOfContactId", email,
               'email' AS "matchedBy"
        FROM contacts WHERE duplicate_of IS NOT NULL AND created_at < {a.cutoff}
    """)


@handles("contacts_invalid_names")
def contacts_invalid_names(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT contact_id AS "contactId", first_name AS "firstName", last_name AS "lastName",
               invalid_reason AS "reason"
        FROM contacts WHERE invalid_reason IS NOT NULL AND created_at < {a.cutoff}
    """)


@handles("contacts_gender_statistics")
def contacts_gender_statistics(a: Ask) -> Sql:
    """share is the percentage of the contacts matching the filters."""
    return a.sql(f"""
        WITH counted AS (
            SELECT gender, count(*) AS n FROM contacts
            WHERE created_at < {a.cutoff} {a.among("country", "country")}
                  {a.among("language", "language")}
            GROUP BY gender
        )
        SELECT gender, n AS "contactsCount",
               (2 * n * 10000 + sum(n) OVER ()) // (2 * sum(n) OVER ()) AS "share"
        FROM counted
    """)


@handles("segments")
def segments(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT s.segment_id AS "segmentId", s.name, s.created_at AS "createdAt",
               count(c.contact_id) AS "contactsCount"
        FROM segments s
        LEFT JOIN segment_members m USING (segment_id)
        LEFT JOIN contacts c ON c.contact_id = m.contact_id AND c.created_at < {a.cutoff}
        WHERE s.created_at < {a.cutoff}
        GROUP BY ALL
    """)
