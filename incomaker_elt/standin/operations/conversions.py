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


def _average(total_cents: int, count: int) -> float:
    return half_up_div(total_cents, count) / 100 if count else 0.0


@handles("conversions_totals")
def conversions_totals(a: Ask) -> list[dict[str, Any]]:
    """The documented ConversionAggregate, field for field (seed: GET /conversions/totals)."""
    source = f"{visible_conversions(a)} WHERE true {conversion_filters(a)}"
    per_currency = a.rows(f"""
        SELECT currency, count(*), sum(amount_wo)::BIGINT, sum(amount_w)::BIGINT,
               sum(amount_wo_ref)::BIGINT, sum(amount_w_ref)::BIGINT
        FROM {source} GROUP BY currency ORDER BY currency
    """)
    unique_contacts = a.rows(f"SELECT count(DISTINCT contact_id) FROM {source}")[0][0]
    number = sum(r[1] for r in per_currency)
    wo_ref = sum(r[4] for r in per_currency)
    w_ref = sum(r[5] for r in per_currency)
    breakdown = [
        {
            "currency": currency,
            "conversionsAmountWoTax": wo / 100,
            "conversionsAmountWTax": w / 100,
            "conversionsNumber": n,
            "averageConversion": _average(w, n),
            "conversionAmountWoTaxReference": ref_wo / 100,
            "conversionAmountWTaxReference": ref_w / 100,
        }
        for currency, n, wo, w, ref_wo, ref_w in per_currency
    ]
    return [
        {
            "uniqueContacts": unique_contacts,
            "averageUniqueConversion": _average(w_ref, unique_contacts),
            "conversions": {
                "conversionsAmountWoTax": wo_ref / 100,
                "conversionsAmountWTax": w_ref / 100,
                "conversionsNumber": number,
                "currency": "CZK",
                "averageConversion": _average(w_ref, number),
                "breakdown": breakdown,
            },
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
