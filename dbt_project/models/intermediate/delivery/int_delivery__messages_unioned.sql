-- Every e-mail that sends: one-off campaigns and smartflow deliveries, under one key.
with campaigns as (
    select
        campaign_id,
        name,
        subject,
        language,
        sender_id,
        segment_id,
        sent_at
    from {{ ref('stg_incomaker__campaigns') }}
),

deliveries as (
    select
        delivery_id,
        smartflow_id,
        smartflow_name,
        name,
        subject,
        language,
        sender_id,
        created_at,
        active
    from {{ ref('stg_incomaker__deliveries') }}
),

unioned as (
    select
        'campaign-' || campaign_id as delivery_key,
        'campaign' as delivery_type,
        campaign_id,
        cast(null as bigint) as delivery_id,
        cast(null as bigint) as smartflow_id,
        cast(null as varchar) as smartflow_name,
        name,
        subject,
        language,
        sender_id,
        segment_id,
        sent_at as started_at,
        cast(null as boolean) as is_active
    from campaigns

    union all

    select
        'delivery-' || delivery_id as delivery_key,
        'smartflow' as delivery_type,
        cast(null as bigint) as campaign_id,
        delivery_id,
        smartflow_id,
        smartflow_name,
        name,
        subject,
        language,
        sender_id,
        cast(null as bigint) as segment_id,
        created_at as started_at,
        active as is_active
    from deliveries
)

select
    delivery_key,
    delivery_type,
    campaign_id,
    delivery_id,
    smartflow_id,
    smartflow_name,
    name,
    subject,
    language,
    sender_id,
    segment_id,
    started_at,
    is_active
from unioned
