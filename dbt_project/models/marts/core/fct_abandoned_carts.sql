-- One row per abandoned cart, with its recovery: the order the contact placed within 7 days.
with carts as (
    select
        cart_id,
        contact_id,
        created_at,
        country,
        currency,
        amount_w_tax,
        amount_w_tax_reference,
        items_count,
        recovered,
        recovered_at,
        recovered_order_id
    from {{ ref('stg_incomaker__abandoned_carts') }}
),

orders as (
    select
        order_id,
        amount_w_tax,
        amount_w_tax_reference
    from {{ ref('fct_orders') }}
)

select
    carts.cart_id,
    carts.contact_id,
    carts.created_at,
    cast(carts.created_at as date) as cart_date,
    carts.country,
    carts.currency,
    carts.amount_w_tax,
    '{{ var("reference_currency") }}' as reference_currency,
    carts.amount_w_tax_reference,
    carts.items_count,
    coalesce(carts.recovered, false) as is_recovered,
    carts.recovered_at,
    carts.recovered_order_id,
    round(date_diff('second', carts.created_at, carts.recovered_at) / 3600.0, 2)
        as hours_to_recovery,
    orders.amount_w_tax as recovered_order_amount_w_tax,
    orders.amount_w_tax_reference as recovered_order_amount_w_tax_reference
from carts
left join orders
    on carts.recovered_order_id = orders.order_id
