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
)

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
    cast(cast(recorded_at as date) - conversion_date as integer) as recording_delay_days,
    country,
    currency,
    conversion_amount_wo_tax,
    conversion_amount_w_tax,
    '{{ var("reference_currency") }}' as reference_currency,
    conversion_amount_wo_tax_reference,
    conversion_amount_w_tax_reference
from conversions
