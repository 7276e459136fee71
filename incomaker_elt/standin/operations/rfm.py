"""RFM analysis of the orders in a window (docs/world.md, "RFM").

Every operation scores the same contacts with the same SQL, so heatmaps, cube, cells, cell
contacts and segments always add up to one another.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql

DEFAULT_WINDOW_DAYS = 365

SEGMENT = """
    CASE
        WHEN r = 1 AND f = 1 THEN 'Lost'
        WHEN r <= 2 AND f <= 2 THEN 'Hibernating'
        WHEN r <= 2 AND f <= 4 THEN 'At Risk'
        WHEN r <= 2 THEN 'Can''t Lose Them'
        WHEN r = 3 AND f <= 2 THEN 'About to Sleep'
        WHEN r = 3 AND f = 3 THEN 'Need Attention'
        WHEN r <= 4 AND f >= 4 THEN 'Loyal'
        WHEN r = 4 AND f = 1 THEN 'Promising'
        WHEN r = 5 AND f = 1 THEN 'New Customers'
        WHEN f <= 3 THEN 'Potential Loyalist'
        ELSE 'Champions'
    END
"""


def analysis_window(a: Ask) -> tuple[str, str]:
    """SQL for the window's first and last day; the last day is the analysis date."""
    last = a.params.get("dateTo", a.today)
    first = a.params.get("dateFrom", last - timedelta(days=DEFAULT_WINDOW_DAYS - 1))
    return a.bind("rfm_from", first), a.bind("rfm_to", last)


def scored(a: Ask) -> str:
    """One row per contact with an order in the window (and by today), scored 1..5 by NTILE."""
    first, last = analysis_window(a)
    return f"""
        WITH bought AS (
            SELECT contact_id, ({last} - max(created_at::DATE))::BIGINT AS recency_days,
                   count(*) AS frequency,
                   sum(amount_wo_ref)::BIGINT AS monetary, min(created_at) AS first_order_at,
                   max(created_at) AS last_order_at
            FROM orders
            WHERE created_at < {a.cutoff} AND created_at::DATE BETWEEN {first} AND {last}
            GROUP BY contact_id
        ),
        scores AS (
            SELECT *,
                   ntile(5) OVER (ORDER BY recency_days DESC, contact_id) AS r,
                   ntile(5) OVER (ORDER BY frequency, contact_id) AS f,
                   ntile(5) OVER (ORDER BY monetary, contact_id) AS m
            FROM bought
        )
        SELECT *, r::VARCHAR || f::VARCHAR || m::VARCHAR AS cell, {SEGMENT} AS segment
        FROM scores
    """


def _half_up(total: str, count: str) -> str:
    return f"(2 * {total} + {count}) // (2 * {count})"


def _cube(scores: str, a: Ask) -> Sql:
    """Contacts and monetary per combination of the scores; the cube keeps the scores asked."""
    return a.sql(f"""
        SELECT {scores}, count(*) AS "contactsCount", sum(monetary)::BIGINT AS "monetary"
        FROM ({scored(a)})
        WHERE true {a.among("r", "r")} {a.among("f", "f")} {a.among("m", "m")}
        GROUP BY ALL
    """)


for name, scores in (
    ("rfm_heatmap_recency_frequency", "r, f"),
    ("rfm_heatmap_recency_monetary", "r, m"),
    ("rfm_heatmap_frequency_monetary", "f, m"),
    ("rfm_cube", "r, f, m"),
):
    handles(name)(partial(_cube, scores))

# dimension -> (score column, value in hundredths)
_DIMENSIONS = {
    "recency": ("r", "recency_days * 100"),
    "frequency": ("f", "frequency * 100"),
    "monetary": ("m", "monetary"),
}


def _distribution(dimension: str) -> str:
    score, value = _DIMENSIONS[dimension]
    return f"""
        SELECT '{dimension}' AS "dimension", {score} AS "score", min({value}) AS "minValue",
               max({value}) AS "maxValue", count(*) AS "contactsCount"
        FROM scored GROUP BY ALL
    """


def _distributions(dimensions: tuple[str, ...], a: Ask) -> Sql:
    """The score buckets of the dimensions, named by a `dimension` field when several."""
    parts = " UNION ALL ".join(_distribution(d) for d in dimensions)
    named = '"dimension", ' if len(dimensions) > 1 else ""
    return a.sql(f"""
        WITH scored AS ({scored(a)})
        SELECT {named}score, "minValue", "maxValue", "contactsCount" FROM ({parts})
    """)


for dimension in _DIMENSIONS:
    handles(f"rfm_{dimension}_distribution")(partial(_distributions, (dimension,)))
handles("rfm_distributions")(partial(_distributions, tuple(_DIMENSIONS)))


def _shares(columns: str, a: Ask) -> Sql:
    """Per cell or segment; share: its percentage of the scored contacts."""
    return a.sql(f"""
        SELECT {columns}, count(*) AS "contactsCount",
               {_half_up("count(*) * 10000", "sum(count(*)) OVER ()")} AS "share",
               sum(monetary)::BIGINT AS "monetary",
               {_half_up("sum(recency_days) * 100", "count(*)")} AS "averageRecencyDays",
               {_half_up("sum(frequency) * 100", "count(*)")} AS "averageFrequency",
               {_half_up("sum(monetary)", "count(*)")} AS "averageMonetary"
        FROM ({scored(a)}) GROUP BY ALL
    """)


handles("rfm_cells")(partial(_shares, "cell, r, f, m, segment"))
handles("rfm_segments")(partial(_shares, "segment"))


@handles("rfm_cell_detail")
def rfm_cell_detail(a: Ask) -> Sql:
    a.require_id(
        "cell",
        f"SELECT cell FROM ({scored(a)})",
        "cell",
        "RFM cell",
        missing="RFM cell {id} has no contacts in this window",
    )
    return a.sql(f"""
        SELECT cell, r, f, m, segment, count(*) AS "contactsCount",
               sum(monetary)::BIGINT AS "monetary",
               min(recency_days) AS "minRecencyDays", max(recency_days) AS "maxRecencyDays",
               min(frequency) AS "minFrequency", max(frequency) AS "maxFrequency",
               min(monetary) AS "minMonetary", max(monetary) AS "maxMonetary"
        FROM ({scored(a)}) WHERE {a.is_id("cell", "cell")} GROUP BY ALL
    """)


@handles("rfm_cell_contacts")
def rfm_cell_contacts(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT contact_id AS "contactId", cell, recency_days AS "recencyDays", frequency,
               monetary
        FROM ({scored(a)}) WHERE {a.is_id("cell", "cell")}
    """)


@handles("rfm_contact_detail")
def rfm_contact_detail(a: Ask) -> Sql:
    a.require_created("contactId", "contacts", "contact_id", "contact")
    _, last = analysis_window(a)
    return a.sql(f"""
        SELECT c.contact_id AS "contactId", {last}::DATE AS "analysisDate",
               s.contact_id IS NOT NULL AS "hasOrders", s.recency_days AS "recencyDays",
               s.frequency, s.monetary, s.r, s.f, s.m, s.cell, s.segment,
               s.first_order_at AS "firstOrderAt", s.last_order_at AS "lastOrderAt"
        FROM contacts c LEFT JOIN ({scored(a)}) s USING (contact_id)
        WHERE {a.is_id("c.contact_id", "contactId")}
    """)


@handles("rfm_outliers")
def rfm_outliers(a: Ask) -> Sql:
    """Contacts whose monetary lies above Q3 + 3 IQR (quartiles by linear interpolation)."""
    return a.sql(f"""
        WITH s AS ({scored(a)}),
        bound AS (
            SELECT quantile_cont(monetary, 0.75)
                   + 3 * (quantile_cont(monetary, 0.75) - quantile_cont(monetary, 0.25)) AS t
            FROM s
        )
        SELECT s.contact_id AS "contactId", s.frequency, s.monetary,
               round(bound.t)::BIGINT AS "threshold"
        FROM s CROSS JOIN bound WHERE s.monetary > bound.t
    """)


@handles("rfm_review_candidates")
def rfm_review_candidates(a: Ask) -> Sql:
    return a.sql(f"""
        WITH s AS ({scored(a)}),
        median AS (SELECT quantile_cont(monetary, 0.5) AS v FROM s)
        SELECT s.contact_id AS "contactId", s.cell, s.segment, s.recency_days AS "recencyDays",
               s.monetary, 'high_value_at_risk' AS "reason"
        FROM s CROSS JOIN median
        WHERE s.segment IN ('At Risk', 'Can''t Lose Them') AND s.monetary >= median.v
    """)
