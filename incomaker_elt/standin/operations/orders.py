"""Orders, their items, and the per-order product recommendations."""

from __future__ import annotations

from typing import Any

from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql
from incomaker_elt.standin.operations.products import recommendations

ORDER_COLUMNS = """
    o.order_id AS "orderId", o.contact_id AS "contactId", o.created_at AS "createdAt",
    o.country, o.currency, o.amount_wo AS "amountWoTax", o.amount_w AS "amountWTax",
    o.amount_wo_ref AS "amountWoTaxReference", o.amount_w_ref AS "amountWTaxReference"
"""


@handles("orders")
def orders(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT {ORDER_COLUMNS}, o.items_count AS "itemsCount"
        FROM orders o
        WHERE o.created_at < {a.cutoff} {a.window("o.created_at::DATE")}
              {a.among("country", "o.country")} {a.among("currency", "o.currency")}
    """)


@handles("order_detail")
def order_detail(a: Ask) -> list[dict[str, Any]]:
    """The order with its items; in block mode, every order of the block."""
    a.require_created("orderId", "orders", "order_id", "order")
    orders = a.arrow(f"""
        SELECT {ORDER_COLUMNS} FROM orders o
        WHERE {a.is_id("o.order_id", "orderId")} AND o.created_at < {a.cutoff}
    """).to_pylist()
    items = f"""
        SELECT i.order_id AS "orderId", i.line_number AS "lineNumber", i.product_id AS "productId",
               p.name AS "productName", i.quantity, i.unit_price_w AS "unitPriceWTax",
               i.amount_wo AS "amountWoTax", i.amount_w AS "amountWTax"
        FROM order_items i JOIN products p USING (product_id)
        WHERE {a.is_id("i.order_id", "orderId")} ORDER BY i.order_id, i.line_number
    """
    return a.nest(orders, "orderId", "items", items)


@handles("order_recommendation")
def order_recommendation(a: Ask) -> Sql:
    """For each order, what goes with its first line's product (the model as of today)."""
    return a.sql(f"""
        WITH model AS ({recommendations(a)})
        SELECT o.order_id AS "orderId", o.created_at AS "createdAt", m.rank,
               m.recommended_product_id AS "productId", m.score
        FROM orders o
        JOIN order_items i ON i.order_id = o.order_id AND i.line_number = 1
        JOIN model m ON m.product_id = i.product_id
        WHERE o.created_at < {a.cutoff} {a.window("o.created_at::DATE")}
    """)
