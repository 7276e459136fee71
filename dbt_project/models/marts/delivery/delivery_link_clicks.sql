-- Clicks per link of each campaign and smartflow delivery.
with events as (
    select
        delivery_key,
        delivery_type,
        send_id,
        url
    from {{ ref('int_delivery__events_unioned') }}
    where event_type = 'clicked'
),

messages as (
    select
        delivery_key,
        campaign_id,
        delivery_id,
        smartflow_id
    from {{ ref('int_delivery__messages_unioned') }}
),

by_link as (
    select
        delivery_key,
        delivery_type,
        url,
        count(*) as clicks,
        count(distinct send_id) as unique_clicks
    from events
    group by delivery_key, delivery_type, url
)

select
    by_link.delivery_key,
    by_link.delivery_type,
    messages.campaign_id,
    messages.delivery_id,
    messages.smartflow_id,
    by_link.url,
    by_link.clicks,
    by_link.unique_clicks,
    round(by_link.clicks / sum(by_link.clicks) over (partition by by_link.delivery_key), 6)
        as share_of_clicks
from by_link
left join messages
    on by_link.delivery_key = messages.delivery_key
