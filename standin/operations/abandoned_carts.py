"""Abandoned carts and whether an order recovered them by today."""

from __future__ import annotations

from typing import Any

from standin.errors import not_found
from standin.operations import handles
from standin.operations.ask import Ask, Sql


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
def abandoned_cart_detail(a: Ask) -> dict[str, Any]:
    cart = a.arrow(f"""
        SELECT {_cart_columns(a)} FROM carts
        WHERE cart_id = {a.id("cartId")} AND created_at < {a.cutoff}
    """).to_pylist()
    if not cart:
        raise not_found(f"cart {a.path['cartId']} not found (as of {a.today.isoformat()})")
    record = cart[0]
    record["amountWTax"] /= 100
    record["amountWTaxReference"] /= 100
    record["items"] = [
        {"productId": product, "productName": name, "quantity": quantity, "priceWTax": price / 100}
        for product, name, quantity, price in a.rows(f"""
            SELECT i.product_id, p.name, i.quantity, i.price_w
            FROM cart_items i JOIN products p USING (product_id)
            WHERE i.cart_id = {a.id("cartId")} ORDER BY i.line_number
        """)
    ]
    return record
