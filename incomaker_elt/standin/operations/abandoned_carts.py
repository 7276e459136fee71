"""Abandoned carts and whether an order recovered them by today."""

from __future__ import annotations

from typing import Any

from incomaker_elt.standin.operations import handles
from incomaker_elt.standin.operations.ask import Ask, Sql


def _cart_columns(a: Ask) -> str:
    return f"""
        cart_id AS "cartId", contact_id AS "contactId", created_at AS "createdAt", country,
        currency, amount_w AS "amountWTax", amount_w_ref AS "amountWTaxReference",
        coalesce(recovered_at < {a.cutoff}, false) AS "recovered",
        CASE WHEN recovered_at < {a.cutoff} THEN recovered_at END AS "recoveredAt",
        CASE WHEN recovered_at < {a.cutoff} THEN recovered_order_id END AS "recoveredOrderId"
    """


@handles("abandoned_carts")
def abandoned_carts(a: Ask) -> Sql:
    return a.sql(f"""
        SELECT {_cart_columns(a)}, items_count AS "itemsCount"
        FROM carts
        WHERE created_at < {a.cutoff} {a.window("created_at::DATE")}
              {a.among("country", "country")} {a.among("currency", "currency")}
    """)


@handles("abandoned_cart_detail")
def abandoned_cart_detail(a: Ask) -> list[dict[str, Any]]:
    """The cart with its items; in block mode, every cart of the block."""
    a.require_created("cartId", "carts", "cart_id", "cart")
    carts = a.arrow(f"""
        SELECT {_cart_columns(a)} FROM carts
        WHERE {a.is_id("cart_id", "cartId")} AND created_at < {a.cutoff}
    """).to_pylist()
    items = f"""
        SELECT i.cart_id AS "cartId", i.product_id AS "productId", p.name AS "productName",
               i.quantity, i.price_w AS "priceWTax"
        FROM cart_items i JOIN products p USING (product_id)
        WHERE {a.is_id("i.cart_id", "cartId")} ORDER BY i.cart_id, i.line_number
    """
    return a.nest(carts, "cartId", "items", items)
