-- Conversions with the delivery key of the e-mail the API attributed them to.
with conversions as (
    select
        conversion_id,
        contact_id,
        order_id,
        campaign_id,
        delivery_id,
        date_day,
        created_at,
        country,
        currency,
        conversion_amount_wo_tax,
        conversion_amount_w_tax,
        conversion_amount_wo_tax_reference,
        conversion_amount_w_tax_reference
    from {{ ref('stg_incomaker__conversions') }}
),

messages as (
    select
        delivery_key,
        campaign_id,
        delivery_id,
        smartflow_id
    from {{ ref('int_delivery__messages_unioned') }}
)

select
    conversions.conversion_id,
    conversions.contact_id,
    conversions.order_id,
    case
        when conversions.campaign_id is not null then 'campaign-' || conversions.campaign_id
        when conversions.delivery_id is not null then 'delivery-' || conversions.delivery_id
    end as delivery_key,
    case
        when conversions.campaign_id is not null then 'campaign'
        when conversions.delivery_id is not null then 'smartflow'
    end as delivery_type,
    conversions.campaign_id,
    conversions.delivery_id,
    messages.smartflow_id,
    conversions.date_day as conversion_date,
    conversions.created_at as recorded_at,
    conversions.country,
    conversions.currency,
    conversions.conversion_amount_wo_tax,
    conversions.conversion_amount_w_tax,
    conversions.conversion_amount_wo_tax_reference,
    conversions.conversion_amount_w_tax_reference
from conversions
left join messages
    on conversions.delivery_id = messages.delivery_id
