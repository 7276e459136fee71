-- Per smartflow and day: its deliveries' events by the date they occurred and its conversions by
-- the date of the order.
with daily as (
    select
        date_day,
        smartflow_id,
        delivery_id,
        sent,
        delivered,
        bounced,
        opens,
        unique_opens,
        clicks,
        unique_clicks,
        unsubscribes,
        conversions,
        revenue_wo_tax_reference,
        revenue_w_tax_reference
    from {{ ref('delivery_daily') }}
    where delivery_type = 'smartflow'
),

smartflows as (
    select
        smartflow_id,
        max(smartflow_name) as smartflow_name
    from {{ ref('int_delivery__messages_unioned') }}
    where delivery_type = 'smartflow'
    group by smartflow_id
),

by_smartflow as (
    select
        smartflow_id,
        date_day,
        count(distinct delivery_id) as deliveries_count,
        sum(sent) as sent,
        sum(delivered) as delivered,
        sum(bounced) as bounced,
        sum(opens) as opens,
        sum(unique_opens) as unique_opens,
        sum(clicks) as clicks,
        sum(unique_clicks) as unique_clicks,
        sum(unsubscribes) as unsubscribes,
        sum(conversions) as conversions,
        sum(revenue_wo_tax_reference) as revenue_wo_tax_reference,
        sum(revenue_w_tax_reference) as revenue_w_tax_reference
    from daily
    group by smartflow_id, date_day
)

select
    by_smartflow.date_day,
    by_smartflow.smartflow_id,
    smartflows.smartflow_name,
    by_smartflow.deliveries_count,
    cast(by_smartflow.sent as bigint) as sent,
    cast(by_smartflow.delivered as bigint) as delivered,
    cast(by_smartflow.bounced as bigint) as bounced,
    cast(by_smartflow.opens as bigint) as opens,
    cast(by_smartflow.unique_opens as bigint) as unique_opens,
    cast(by_smartflow.clicks as bigint) as clicks,
    cast(by_smartflow.unique_clicks as bigint) as unique_clicks,
    cast(by_smartflow.unsubscribes as bigint) as unsubscribes,
    cast(by_smartflow.conversions as bigint) as conversions,
    '{{ var("reference_currency") }}' as reference_currency,
    by_smartflow.revenue_wo_tax_reference,
    by_smartflow.revenue_w_tax_reference
from by_smartflow
left join smartflows
    on by_smartflow.smartflow_id = smartflows.smartflow_id
