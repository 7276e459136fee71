{{ config(materialized='table') }}

-- Our own attribution of every order, to check the API's: the latest send to the contact that the
-- contact opened within var `attribution_window_days` before the order (docs/world.md,
-- "Conversions"). One row per order that either side attributes.
with orders as (
    select
        order_id,
        contact_id,
        created_at
    from {{ ref('stg_incomaker__orders') }}
),

events as (
    select
        delivery_key,
        send_id,
        contact_id,
        event_type,
        occurred_at
    from {{ ref('int_delivery__events_unioned') }}
    where event_type in ('sent', 'opened')
),

api_conversions as (
    select
        conversion_id,
        order_id,
        delivery_key
    from {{ ref('int_conversions__attributed') }}
),

sends as (
    select
        send_id,
        any_value(delivery_key) as delivery_key,
        min(occurred_at) filter (where event_type = 'sent') as sent_at
    from events
    group by send_id
),

opens as (
    select
        send_id,
        contact_id,
        occurred_at as opened_at
    from events
    where event_type = 'opened'
),

attributed as (
    -- "Latest send" by send time, then send id.
    select
        orders.order_id,
        arg_max(opens.send_id, struct_pack(sent_at := sends.sent_at, send_id := opens.send_id))
            as send_id
    from orders
    inner join opens
        on orders.contact_id = opens.contact_id
        and opens.opened_at < orders.created_at
        and opens.opened_at >= orders.created_at
            - interval ({{ var('attribution_window_days') }}) day
    inner join sends
        on opens.send_id = sends.send_id
    group by orders.order_id
),

joined as (
    select
        coalesce(attributed.order_id, api_conversions.order_id) as order_id,
        attributed.send_id as attributed_send_id,
        sends.delivery_key as attributed_delivery_key,
        api_conversions.conversion_id as api_conversion_id,
        api_conversions.delivery_key as api_delivery_key
    from attributed
    left join sends
        on attributed.send_id = sends.send_id
    full outer join api_conversions
        on attributed.order_id = api_conversions.order_id
)

select
    order_id,
    attributed_send_id,
    attributed_delivery_key,
    api_conversion_id,
    api_delivery_key,
    attributed_delivery_key is not distinct from api_delivery_key as api_agrees
from joined
