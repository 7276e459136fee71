{{ config(materialized='table') }}

-- Every send event (sent, delivered, bounced, opened, clicked, unsubscribed) of campaigns and
-- smartflow deliveries, under the delivery key of int_delivery__messages_unioned. Materialised: every
-- delivery mart scans it.
with campaign_activity as (
    select
        event_id,
        send_id,
        campaign_id,
        contact_id,
        event_type,
        occurred_at,
        url
    from {{ ref('stg_incomaker__campaign_recipient_activity') }}
),

delivery_activity as (
    select
        event_id,
        send_id,
        delivery_id,
        contact_id,
        event_type,
        occurred_at,
        url
    from {{ ref('stg_incomaker__delivery_recipient_activity') }}
),

unioned as (
    select
        'campaign-' || campaign_id as delivery_key,
        'campaign' as delivery_type,
        event_id,
        send_id,
        contact_id,
        event_type,
        occurred_at,
        url
    from campaign_activity

    union all

    select
        'delivery-' || delivery_id as delivery_key,
        'smartflow' as delivery_type,
        event_id,
        send_id,
        contact_id,
        event_type,
        occurred_at,
        url
    from delivery_activity
)

select
    delivery_key,
    delivery_type,
    event_id,
    send_id,
    contact_id,
    lower(event_type) as event_type,
    occurred_at,
    cast(occurred_at as date) as occurred_date,
    url
from unioned
