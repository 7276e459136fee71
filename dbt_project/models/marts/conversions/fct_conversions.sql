-- One row per conversion: an order attributed to a campaign or smartflow e-mail.
with conversions as (
    select
        conversion_id,
        contact_id,
        order_id,
        delivery_key,
        delivery_type,
        campaign_id,
        delivery_id,
        smartflow_id,
        conversion_date,
        recorded_at,
        country,
        currency,
        conversion_amount_wo_tax,
        conversion_amount_w_tax,
        conversion_amount_wo_tax_reference,
        conversion_amount_w_tax_reference
    from {{ ref('int_conversions__attributed') }}
),

attribution as (
    select
        order_id,
        attributed_send_id,
        api_agrees
    from {{ ref('int_conversions__attribution_checked') }}
)

select
    conversions.conversion_id,
    conversions.contact_id,
    conversions.order_id,
    case when attribution.api_agrees then attribution.attributed_send_id end as send_id,
    conversions.delivery_key,
    conversions.delivery_type,
    conversions.campaign_id,
    conversions.delivery_id,
    conversions.smartflow_id,
    conversions.conversion_date,
    conversions.recorded_at,
    cast(cast(conversions.recorded_at as date) - conversions.conversion_date as integer)
        as recording_delay_days,
    conversions.country,
    conversions.currency,
    conversions.conversion_amount_wo_tax,
    conversions.conversion_amount_w_tax,
    '{{ var("reference_currency") }}' as reference_currency,
    conversions.conversion_amount_wo_tax_reference,
    conversions.conversion_amount_w_tax_reference
from conversions
left join attribution
    on conversions.order_id = attribution.order_id
