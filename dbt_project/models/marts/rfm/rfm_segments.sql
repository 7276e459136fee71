-- The named RFM segments: contacts, share of scored contacts, revenue and averages.
with contacts as (
    select
        segment,
        recency_days,
        frequency,
        monetary
    from {{ ref('rfm_contacts') }}
),

segment_names as (
    {%- for name in rfm_segment_names() %}
    select '{{ name | replace("'", "''") }}' as segment, {{ loop.index }} as segment_order
    {{- "\n    union all" if not loop.last }}
    {%- endfor %}
),

by_segment as (
    select
        segment,
        count(*) as contacts_count,
        sum(monetary) as monetary,
        sum(recency_days) as recency_days_total,
        sum(frequency) as frequency_total
    from contacts
    group by segment
),

population as (
    select count(*) as contacts_total
    from contacts
)

select
    segment_names.segment,
    segment_names.segment_order,
    coalesce(by_segment.contacts_count, 0) as contacts_count,
    {{ round_half_up_divide('coalesce(by_segment.contacts_count, 0) * 100', 'population.contacts_total') }}
        as share,
    '{{ var("reference_currency") }}' as reference_currency,
    cast(coalesce(by_segment.monetary, 0) as decimal(38, 2)) as monetary,
    {{ round_half_up_divide('by_segment.recency_days_total', 'by_segment.contacts_count') }}
        as average_recency_days,
    {{ round_half_up_divide('by_segment.frequency_total', 'by_segment.contacts_count') }}
        as average_frequency,
    {{ round_half_up_divide('by_segment.monetary', 'by_segment.contacts_count') }}
        as average_monetary
from segment_names
cross join population
left join by_segment
    on segment_names.segment = by_segment.segment
