-- One row per order line, with its order's context and its product's category.
with items as (
    select
        order_id,
        line_number,
        product_id,
        product_name,
        quantity,
        unit_price_w_tax,
        amount_wo_tax,
        amount_w_tax
    from {{ ref('stg_incomaker__order_detail_items') }}
),

orders as (
    select
        order_id,
        contact_id,
        created_at,
        order_date,
        country,
        currency,
        is_conversion
    from {{ ref('fct_orders') }}
),

products as (
    select
        product_id,
        category_id
    from {{ ref('dim_products') }}
)

select
    items.order_id || '-' || items.line_number as order_item_key,
    items.order_id,
    items.line_number,
    orders.contact_id,
    orders.created_at,
    orders.order_date,
    orders.country,
    orders.currency,
    items.product_id,
    items.product_name,
    products.category_id,
    items.quantity,
    items.unit_price_w_tax,
    items.amount_wo_tax,
    items.amount_w_tax,
    orders.is_conversion
from items
left join orders
    on items.order_id = orders.order_id
left join products
    on items.product_id = products.product_id
