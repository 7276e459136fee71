-- One row per order, with the e-mail it is attributed to when it is a conversion.
with orders as (
    select
        order_id,
        contact_id,
        created_at,
        country,
        currency,
        amount_wo_tax,
        amount_w_tax,
        amount_wo_tax_reference,
        amount_w_tax_reference,
        items_count
    from {{ ref('stg_incomaker__orders') }}
),

conversions as (
    select
        order_id,
        conversion_id,
        delivery_key,
        delivery_type,
        campaign_id,
        delivery_id
    from {{ ref('fct_conversions') }}
)

select
    orders.order_id,
    orders.contact_id,
    orders.created_at,
    cast(orders.created_at as date) as order_date,
    orders.country,
    orders.currency,
    orders.amount_wo_tax,
    orders.amount_w_tax,
    '{{ var("reference_currency") }}' as reference_currency,
    orders.amount_wo_tax_reference,
    orders.amount_w_tax_reference,
    orders.items_count,
    conversions.conversion_id is not null as is_conversion,
    conversions.conversion_id,
    conversions.delivery_key,
    conversions.delivery_type,
    conversions.campaign_id,
    conversions.delivery_id
from orders
left join conversions
    on orders.order_id = conversions.order_id
