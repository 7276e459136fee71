"""Products and categories, purchases, revenue rankings and the recommendation model."""

from __future__ import annotations

from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql
from incomaker_elt.standin.operations.common import visible_conversions


def _product_columns(a: Ask) -> str:
    # updatedAt moves when a price change or a withdrawal has happened by today.
    return f"""
        p.product_id AS "productId", p.name, p.category_id AS "categoryId",
        p.price_wtax AS "priceWTax", 'CZK' AS "currency", p.created_at AS "createdAt",
        greatest(p.created_at,
                 CASE WHEN p.changed_at < {a.cutoff} THEN p.changed_at END,
                 CASE WHEN p.retired_at < {a.cutoff} THEN p.retired_at END) AS "updatedAt",
        (p.retired_at IS NULL OR p.retired_at >= {a.cutoff}) AS "active"
    """


def _pairs(a: Ask, window: bool, having: str = "") -> str:
    """CTEs: lines, the distinct (order, product) pairs of orders placed by today (and in the
    window); bought, each product's orders; pairs, the orders holding each two products."""
    return f"""
        lines AS (
            SELECT DISTINCT i.order_id, i.product_id
            FROM order_items i JOIN orders o USING (order_id)
            WHERE o.created_at < {a.cutoff} {a.window("o.created_at::DATE") if window else ""}
        ),
        bought AS (SELECT product_id, count(*) AS orders FROM lines GROUP BY product_id),
        pairs AS (
            SELECT x.product_id, y.product_id AS other, count(*) AS together
            FROM lines x JOIN lines y ON x.order_id = y.order_id AND x.product_id <> y.product_id
            GROUP BY ALL {having}
        )
    """


def recommendations(a: Ask, top: int = 3) -> str:
    """The recommendation model as of today: for each product, the products most often in the
    same order; score = share of the product's orders that also hold the other (0..1)."""
    return f"""
        WITH {_pairs(a, window=False)},
        ranked AS (
            SELECT p.product_id, p.other AS recommended_product_id,
                   (2 * p.together * 100 + b.orders) // (2 * b.orders) AS score,
                   row_number() OVER (PARTITION BY p.product_id
                                      ORDER BY p.together DESC, p.other) AS rank
            FROM pairs p JOIN bought b USING (product_id)
        )
        SELECT product_id, rank, recommended_product_id, score FROM ranked WHERE rank <= {top}
    """


@handles("products")
def products(a: Ask) -> Sql:
    return a.sql(f"SELECT {_product_columns(a)} FROM products p WHERE p.created_at < {a.cutoff}")


@handles("product_detail")
def product_detail(a: Ask) -> Sql:
    a.require_created("productId", "products", "product_id", "product")
    return a.sql(f"""
        SELECT {_product_columns(a)}, c.name AS "categoryName", p.description
        FROM products p JOIN categories c USING (category_id)
        WHERE {a.is_id("p.product_id", "productId")}
    """)


@handles("product_categories")
def product_categories(a: Ask) -> Sql:
    return a.sql("""
        SELECT category_id AS "categoryId", name, parent_category_id AS "parentCategoryId"
        FROM categories
    """)


@handles("product_purchases")
def product_purchases(a: Ask) -> Sql:
    a.require_created("productId", "products", "product_id", "product")
    return a.sql(f"""
        SELECT i.order_id AS "orderId", i.line_number AS "lineNumber", i.product_id AS "productId",
               o.contact_id AS "contactId", o.created_at AS "createdAt", o.currency,
               i.quantity, i.amount_w AS "amountWTax", i.amount_w_ref AS "amountWTaxReference"
        FROM order_items i JOIN orders o USING (order_id)
        WHERE {a.is_id("i.product_id", "productId")} AND o.created_at < {a.cutoff}
              {a.window("o.created_at::DATE")}
    """)


@handles("products_bought_together")
def products_bought_together(a: Ask) -> Sql:
    """Pairs in at least two orders; support and confidence are percentages."""
    return a.sql(f"""
        WITH {_pairs(a, window=True, having="HAVING count(*) >= 2")},
        total AS (SELECT count(DISTINCT order_id) AS orders FROM lines)
        SELECT p.product_id AS "productId", p.other AS "otherProductId",
               p.together AS "ordersCount",
               (2 * p.together * 10000 + t.orders) // (2 * t.orders) AS "support",
               (2 * p.together * 10000 + b.orders) // (2 * b.orders) AS "confidence"
        FROM pairs p JOIN bought b USING (product_id) CROSS JOIN total t
    """)


@handles("products_by_campaign")
def products_by_campaign(a: Ask) -> Sql:
    """What the orders converted by each campaign contained."""
    where = a.window("date") + a.among("campaignId", "campaign_id")
    return a.sql(f"""
        SELECT c.campaign_id AS "campaignId", i.product_id AS "productId",
               count(DISTINCT i.order_id) AS "ordersCount", sum(i.quantity)::BIGINT AS "quantity",
               sum(i.amount_w_ref)::BIGINT AS "revenueWTaxReference"
        FROM {visible_conversions(a, "AND campaign_id IS NOT NULL" + where)} c
        JOIN order_items i USING (order_id)
        GROUP BY ALL
    """)


@handles("products_by_revenue")
def products_by_revenue(a: Ask) -> Sql:
    return a.sql(f"""
        WITH revenue AS (
            SELECT i.product_id, count(DISTINCT i.order_id) AS orders,
                   sum(i.quantity)::BIGINT AS quantity, sum(i.amount_wo_ref)::BIGINT AS wo,
                   sum(i.amount_w_ref)::BIGINT AS w
            FROM order_items i JOIN orders o USING (order_id)
            WHERE o.created_at < {a.cutoff} {a.window("o.created_at::DATE")}
                  {a.among("currency", "o.currency")}
            GROUP BY i.product_id
        )
        SELECT row_number() OVER (ORDER BY w DESC, product_id) AS "rank",
               product_id AS "productId", orders AS "ordersCount", quantity,
               wo AS "revenueWoTaxReference", w AS "revenueWTaxReference"
        FROM revenue
    """)


@handles("products_recommendation")
def products_recommendation(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT product_id AS "productId", rank, recommended_product_id AS "recommendedProductId",
               score
        FROM ({recommendations(a)})
    """)
