"""Conversions: orders attributed to an e-mail, as recorded by today (docs/world.md)."""

from __future__ import annotations

from typing import Any

from incomaker_elt.standin.money import half_up_div
from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql
from incomaker_elt.standin.operations.common import (
    conversion_filters,
    conversion_rows,
    visible_conversions,
)


@handles("conversions")
def conversions(a: Ask) -> Sql:
    return a.sql(conversion_rows(a))


def _average(total_cents: int, count: int) -> int:
    return half_up_div(total_cents, count) if count else 0


@handles("conversions_totals")
def conversions_totals(a: Ask) -> list[dict[str, Any]]:
    """The documented ConversionAggregate, field for field (seed: GET /conversions/totals)."""
    source = f"{visible_conversions(a)} WHERE true {conversion_filters(a)}"
    breakdown = a.arrow(f"""
        SELECT currency, sum(amount_wo)::BIGINT AS "conversionsAmountWoTax",
               sum(amount_w)::BIGINT AS "conversionsAmountWTax", count(*) AS "conversionsNumber",
               ((2 * sum(amount_w) + count(*)) // (2 * count(*)))::BIGINT AS "averageConversion",
               sum(amount_wo_ref)::BIGINT AS "conversionAmountWoTaxReference",
               sum(amount_w_ref)::BIGINT AS "conversionAmountWTaxReference"
        FROM {source} GROUP BY currency ORDER BY currency
    """).to_pylist()
    ((unique_contacts, number, wo_ref, w_ref),) = a.rows(f"""
        SELECT count(DISTINCT contact_id), count(*), coalesce(sum(amount_wo_ref), 0)::BIGINT,
               coalesce(sum(amount_w_ref), 0)::BIGINT
        FROM {source}
    """)
    conversions = {
        "conversionsAmountWoTax": wo_ref,
        "conversionsAmountWTax": w_ref,
        "conversionsNumber": number,
        "currency": "CZK",
        "averageConversion": _average(w_ref, number),
        "breakdown": breakdown,
    }
    average_unique = _average(w_ref, unique_contacts)
    return [
        {
            "uniqueContacts": unique_contacts,
            "averageUniqueConversion": average_unique,
            "conversions": conversions,
        }
    ]


@handles("conversions_by_timeframe")
def conversions_by_timeframe(a: Ask) -> Sql:
    timeframe = a.params.get("timeframe", "month")
    return a.sql(f"""
        SELECT date_trunc('{timeframe}', date)::DATE AS "periodStart",
               '{timeframe}' AS "timeframe", currency,
               count(*) AS "conversionsNumber",
               sum(amount_wo)::BIGINT AS "conversionsAmountWoTax",
               sum(amount_w)::BIGINT AS "conversionsAmountWTax",
               sum(amount_wo_ref)::BIGINT AS "conversionAmountWoTaxReference",
               sum(amount_w_ref)::BIGINT AS "conversionAmountWTaxReference"
        FROM {visible_conversions(a)} WHERE true {conversion_filters(a)}
        GROUP BY ALL
    """)


@handles("conversions_history")
def conversions_history(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT date, count(*) AS "conversionsNumber",
               count(DISTINCT contact_id) AS "uniqueContacts",
               sum(amount_wo_ref)::BIGINT AS "conversionAmountWoTaxReference",
               sum(amount_w_ref)::BIGINT AS "conversionAmountWTaxReference"
        FROM {visible_conversions(a)} WHERE true {conversion_filters(a)}
        GROUP BY date
    """)
