-- Per day and campaign or smartflow delivery: events by the date they occurred (as the API's daily
-- results count them) and conversions by the date of the order.
with events as (
    select
        delivery_key,
        delivery_type,
        send_id,
        event_type,
        occurred_date
    from {{ ref('int_delivery__events_unioned') }}
),

conversions as (
    select
        delivery_key,
        delivery_type,
        conversion_date,
        conversion_amount_wo_tax_reference,
        conversion_amount_w_tax_reference
    from {{ ref('fct_conversions') }}
),

messages as (
    select
        delivery_key,
        campaign_id,
        delivery_id,
        smartflow_id
    from {{ ref('int_delivery__messages_unioned') }}
),

daily_events as (
    select
        delivery_key,
        delivery_type,
        occurred_date as date_day,
        count(*) filter (where event_type = 'sent') as sent,
        count(*) filter (where event_type = 'delivered') as delivered,
        count(*) filter (where event_type = 'bounced') as bounced,
        count(*) filter (where event_type = 'opened') as opens,
        count(distinct send_id) filter (where event_type = 'opened') as unique_opens,
        count(*) filter (where event_type = 'clicked') as clicks,
        count(distinct send_id) filter (where event_type = 'clicked') as unique_clicks,
        count(*) filter (where event_type = 'unsubscribed') as unsubscribes
    from events
    group by delivery_key, delivery_type, occurred_date
),

daily_conversions as (
    select
        delivery_key,
        delivery_type,
        conversion_date as date_day,
        count(*) as conversions,
        sum(conversion_amount_wo_tax_reference) as revenue_wo_tax_reference,
        sum(conversion_amount_w_tax_reference) as revenue_w_tax_reference
    from conversions
    group by delivery_key, delivery_type, conversion_date
),

joined as (
    select
        coalesce(daily_events.delivery_key, daily_conversions.delivery_key) as delivery_key,
        coalesce(daily_events.delivery_type, daily_conversions.delivery_type) as delivery_type,
        coalesce(daily_events.date_day, daily_conversions.date_day) as date_day,
        coalesce(daily_events.sent, 0) as sent,
        coalesce(daily_events.delivered, 0) as delivered,
        coalesce(daily_events.bounced, 0) as bounced,
        coalesce(daily_events.opens, 0) as opens,
        coalesce(daily_events.unique_opens, 0) as unique_opens,
        coalesce(daily_events.clicks, 0) as clicks,
        coalesce(daily_events.unique_clicks, 0) as unique_clicks,
        coalesce(daily_events.unsubscribes, 0) as unsubscribes,
        coalesce(daily_conversions.conversions, 0) as conversions,
        coalesce(daily_conversions.revenue_wo_tax_reference, 0) as revenue_wo_tax_reference,
        coalesce(daily_conversions.revenue_w_tax_reference, 0) as revenue_w_tax_reference
    from daily_events
    full outer join daily_conversions
        on daily_events.delivery_key = daily_conversions.delivery_key
        and daily_events.date_day = daily_conversions.date_day
)

select
    joined.date_day,
    joined.delivery_key,
    joined.delivery_type,
    messages.campaign_id,
    messages.delivery_id,
    messages.smartflow_id,
    joined.sent,
    joined.delivered,
    joined.bounced,
    joined.opens,
    joined.unique_opens,
    joined.clicks,
    joined.unique_clicks,
    joined.unsubscribes,
    joined.conversions,
    '{{ var("reference_currency") }}' as reference_currency,
    cast(joined.revenue_wo_tax_reference as decimal(38, 2)) as revenue_wo_tax_reference,
    cast(joined.revenue_w_tax_reference as decimal(38, 2)) as revenue_w_tax_reference
from joined
left join messages
    on joined.delivery_key = messages.delivery_key
