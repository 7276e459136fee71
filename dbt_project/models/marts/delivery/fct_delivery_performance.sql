-- One row per campaign and per smartflow delivery: what was sent, what happened to it, and what it
-- earned. Counts come from the send events, over the whole history loaded.
with messages as (
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
        started_at
    from {{ ref('int_delivery__messages_unioned') }}
),

events as (
    select
        delivery_key,
        send_id,
        contact_id,
        event_type,
        occurred_at
    from {{ ref('int_delivery__events_unioned') }}
),

conversions as (
    select
        delivery_key,
        contact_id,
        conversion_amount_wo_tax_reference,
        conversion_amount_w_tax_reference
    from {{ ref('fct_conversions') }}
),

event_totals as (
    select
        delivery_key,
        count(*) filter (where event_type = 'sent') as sent,
        count(*) filter (where event_type = 'delivered') as delivered,
        count(*) filter (where event_type = 'bounced') as bounced,
        count(*) filter (where event_type = 'opened') as opens,
        count(distinct send_id) filter (where event_type = 'opened') as unique_opens,
        count(*) filter (where event_type = 'clicked') as clicks,
        count(distinct send_id) filter (where event_type = 'clicked') as unique_clicks,
        count(*) filter (where event_type = 'unsubscribed') as unsubscribes,
        count(distinct contact_id) filter (where event_type = 'delivered') as delivered_contacts,
        min(occurred_at) filter (where event_type = 'sent') as first_sent_at,
        max(occurred_at) filter (where event_type = 'sent') as last_sent_at
    from events
    group by delivery_key
),

conversion_totals as (
    select
        delivery_key,
        count(*) as conversions,
        count(distinct contact_id) as converted_contacts,
        sum(conversion_amount_wo_tax_reference) as revenue_wo_tax_reference,
        sum(conversion_amount_w_tax_reference) as revenue_w_tax_reference
    from conversions
    group by delivery_key
),

joined as (
    select
        messages.delivery_key,
        messages.delivery_type,
        messages.campaign_id,
        messages.delivery_id,
        messages.smartflow_id,
        messages.smartflow_name,
        messages.name,
        messages.subject,
        messages.language,
        messages.started_at,
        event_totals.first_sent_at,
        event_totals.last_sent_at,
        coalesce(event_totals.sent, 0) as sent,
        coalesce(event_totals.delivered, 0) as delivered,
        coalesce(event_totals.bounced, 0) as bounced,
        coalesce(event_totals.opens, 0) as opens,
        coalesce(event_totals.unique_opens, 0) as unique_opens,
        coalesce(event_totals.clicks, 0) as clicks,
        coalesce(event_totals.unique_clicks, 0) as unique_clicks,
        coalesce(event_totals.unsubscribes, 0) as unsubscribes,
        coalesce(event_totals.delivered_contacts, 0) as delivered_contacts,
        coalesce(conversion_totals.conversions, 0) as conversions,
        coalesce(conversion_totals.converted_contacts, 0) as converted_contacts,
        coalesce(conversion_totals.revenue_wo_tax_reference, 0) as revenue_wo_tax_reference,
        coalesce(conversion_totals.revenue_w_tax_reference, 0) as revenue_w_tax_reference
    from messages
    left join event_totals
        on messages.delivery_key = event_totals.delivery_key
    left join conversion_totals
        on messages.delivery_key = conversion_totals.delivery_key
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
    started_at,
    first_sent_at,
    last_sent_at,
    sent,
    delivered,
    bounced,
    opens,
    unique_opens,
    clicks,
    unique_clicks,
    unsubscribes,
    delivered_contacts,
    conversions,
    converted_contacts,
    '{{ var("reference_currency") }}' as reference_currency,
    cast(revenue_wo_tax_reference as decimal(38, 2)) as revenue_wo_tax_reference,
    cast(revenue_w_tax_reference as decimal(38, 2)) as revenue_w_tax_reference,
    {{ safe_ratio('delivered', 'sent') }} as delivery_rate,
    {{ safe_ratio('unique_opens', 'delivered') }} as open_rate,
    {{ safe_ratio('unique_clicks', 'delivered') }} as click_rate,
    {{ safe_ratio('unique_clicks', 'unique_opens') }} as click_to_open_rate,
    {{ safe_ratio('unsubscribes', 'delivered') }} as unsubscribe_rate,
    {{ safe_ratio('converted_contacts', 'delivered_contacts') }} as conversion_rate,
    {{ round_half_up_divide('revenue_w_tax_reference', 'delivered') }} as revenue_per_recipient
from joined
