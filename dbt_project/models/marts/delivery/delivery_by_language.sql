-- Campaigns and smartflow deliveries per language and type: counts, rates and revenue.
with performance as (
    select
        delivery_type,
        language,
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
    from {{ ref('fct_delivery_performance') }}
),

by_language as (
    -- A send belongs to one e-mail, so distinct sends add up across e-mails.
    select
        language,
        delivery_type,
        count(*) filter (where sent > 0) as deliveries_count,
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
    from performance
    group by language, delivery_type
)

select
    language,
    delivery_type,
    deliveries_count,
    cast(sent as bigint) as sent,
    cast(delivered as bigint) as delivered,
    cast(bounced as bigint) as bounced,
    cast(opens as bigint) as opens,
    cast(unique_opens as bigint) as unique_opens,
    cast(clicks as bigint) as clicks,
    cast(unique_clicks as bigint) as unique_clicks,
    cast(unsubscribes as bigint) as unsubscribes,
    cast(conversions as bigint) as conversions,
    '{{ var("reference_currency") }}' as reference_currency,
    revenue_wo_tax_reference,
    revenue_w_tax_reference,
    {{ safe_ratio('delivered', 'sent') }} as delivery_rate,
    {{ safe_ratio('unique_opens', 'delivered') }} as open_rate,
    {{ safe_ratio('unique_clicks', 'delivered') }} as click_rate,
    {{ safe_ratio('unique_clicks', 'unique_opens') }} as click_to_open_rate,
    {{ safe_ratio('unsubscribes', 'delivered') }} as unsubscribe_rate
from by_language
