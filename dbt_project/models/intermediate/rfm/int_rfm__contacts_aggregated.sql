-- Recency, frequency and monetary value of every contact with an order in the RFM window.
with orders as (
    select
        order_id,
        contact_id,
        created_at,
        amount_wo_tax_reference
    from {{ ref('stg_incomaker__orders') }}
),

rfm_window as (
    select
        analysis_date,
        window_start
    from {{ ref('int_rfm__window_resolved') }}
),

orders_in_window as (
    select
        orders.contact_id,
        orders.created_at,
        cast(orders.created_at as date) as order_date,
        orders.amount_wo_tax_reference,
        rfm_window.analysis_date,
        rfm_window.window_start
    from orders
    inner join rfm_window
        on cast(orders.created_at as date) between rfm_window.window_start
            and rfm_window.analysis_date
)

select
    contact_id,
    any_value(analysis_date) as analysis_date,
    any_value(window_start) as window_start,
    cast(any_value(analysis_date) - max(order_date) as integer) as recency_days,
    count(*) as frequency,
    sum(amount_wo_tax_reference) as monetary,
    min(created_at) as first_order_at,
    max(created_at) as last_order_at
from orders_in_window
group by contact_id
