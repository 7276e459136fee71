-- Conversions per day, country and currency.
with conversions as (
    select
        contact_id,
        conversion_date,
        country,
        currency,
        conversion_amount_wo_tax,
        conversion_amount_w_tax,
        conversion_amount_wo_tax_reference,
        conversion_amount_w_tax_reference
    from {{ ref('fct_conversions') }}
),

daily as (
    select
        conversion_date,
        country,
        currency,
        count(*) as conversions_number,
        count(distinct contact_id) as unique_contacts,
        sum(conversion_amount_wo_tax) as conversions_amount_wo_tax,
        sum(conversion_amount_w_tax) as conversions_amount_w_tax,
        sum(conversion_amount_wo_tax_reference) as conversions_amount_wo_tax_reference,
        sum(conversion_amount_w_tax_reference) as conversions_amount_w_tax_reference
    from conversions
    group by conversion_date, country, currency
)

select
    conversion_date,
    country,
    currency,
    conversions_number,
    unique_contacts,
    conversions_amount_wo_tax,
    conversions_amount_w_tax,
    {{ round_half_up_divide('conversions_amount_w_tax', 'conversions_number') }}
        as average_conversion_w_tax,
    '{{ var("reference_currency") }}' as reference_currency,
    conversions_amount_wo_tax_reference,
    conversions_amount_w_tax_reference,
    {{ round_half_up_divide('conversions_amount_w_tax_reference', 'conversions_number') }}
        as average_conversion_w_tax_reference
from daily
