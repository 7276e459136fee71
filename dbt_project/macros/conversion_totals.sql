{#-
    The API's ConversionAggregate (GET /conversions/totals) computed from fct_conversions, for any
    window and country/currency filter:

        {{ conversion_totals(date_from='2026-01-01', date_to='2026-03-31',
                             countries=['CZ', 'SK'], currencies=['EUR', 'CZK']) }}

    Every argument is optional (none = no filter); dates are inclusive ISO dates on the conversion
    date. Use it as a model (conversion_totals, conversion_totals_by_currency), in an analysis, or
    ad hoc: dbt show --inline "{{ conversion_totals(date_from='2026-06-01') }}".
    Rules (docs/world.md, "Conversions"): totals are sums of the rows' reference amounts, averages
    are rounded half up to two decimals, the breakdown has one entry per currency, sorted by code.
-#}

{% macro _sql_string_list(values) -%}
    {%- for value in values -%}
        '{{ value | replace("'", "''") }}'{{ ", " if not loop.last }}
    {%- endfor -%}
{%- endmacro %}


{% macro _filtered_conversions(date_from, date_to, countries, currencies) %}
    select
        contact_id,
        currency,
        conversion_amount_wo_tax,
        conversion_amount_w_tax,
        conversion_amount_wo_tax_reference,
        conversion_amount_w_tax_reference
    from {{ ref('fct_conversions') }}
    where true
    {%- if date_from %}
        and conversion_date >= cast('{{ date_from }}' as date)
    {%- endif %}
    {%- if date_to %}
        and conversion_date <= cast('{{ date_to }}' as date)
    {%- endif %}
    {%- if countries %}
        and country in ({{ _sql_string_list(countries) }})
    {%- endif %}
    {%- if currencies %}
        and currency in ({{ _sql_string_list(currencies) }})
    {%- endif %}
{% endmacro %}


{% macro conversion_totals_by_currency(date_from=none, date_to=none, countries=none, currencies=none) %}
with conversions as (
    {{ _filtered_conversions(date_from, date_to, countries, currencies) }}
),

by_currency as (
    select
        currency,
        count(*) as conversions_number,
        sum(conversion_amount_wo_tax) as conversions_amount_wo_tax,
        sum(conversion_amount_w_tax) as conversions_amount_w_tax,
        sum(conversion_amount_wo_tax_reference) as conversion_amount_wo_tax_reference,
        sum(conversion_amount_w_tax_reference) as conversion_amount_w_tax_reference,
        count(distinct contact_id) as unique_contacts
    from conversions
    group by currency
)

select
    currency,
    conversions_number,
    conversions_amount_wo_tax,
    conversions_amount_w_tax,
    {{ round_half_up_divide('conversions_amount_w_tax', 'conversions_number') }}
        as average_conversion,
    conversion_amount_wo_tax_reference,
    conversion_amount_w_tax_reference,
    unique_contacts
from by_currency
{% endmacro %}


{% macro conversion_totals(date_from=none, date_to=none, countries=none, currencies=none) %}
with conversions as (
    {{ _filtered_conversions(date_from, date_to, countries, currencies) }}
),

by_currency as (
    {{ conversion_totals_by_currency(date_from, date_to, countries, currencies) }}
),

breakdown as (
    select
        list(
            struct_pack(
                currency := currency,
                conversions_amount_wo_tax := conversions_amount_wo_tax,
                conversions_amount_w_tax := conversions_amount_w_tax,
                conversions_number := conversions_number,
                average_conversion := average_conversion,
                conversion_amount_wo_tax_reference := conversion_amount_wo_tax_reference,
                conversion_amount_w_tax_reference := conversion_amount_w_tax_reference
            )
            order by currency
        ) as breakdown
    from by_currency
),

totals as (
    select
        count(*) as conversions_number,
        coalesce(sum(conversion_amount_wo_tax_reference), 0) as conversions_amount_wo_tax,
        coalesce(sum(conversion_amount_w_tax_reference), 0) as conversions_amount_w_tax,
        count(distinct contact_id) as unique_contacts
    from conversions
)

select
    {{ "cast('" ~ date_from ~ "' as date)" if date_from else "cast(null as date)" }} as date_from,
    {{ "cast('" ~ date_to ~ "' as date)" if date_to else "cast(null as date)" }} as date_to,
    {{ "'" ~ (countries | join(',')) ~ "'" if countries else "cast(null as varchar)" }}
        as countries,
    {{ "'" ~ (currencies | join(',')) ~ "'" if currencies else "cast(null as varchar)" }}
        as currencies,
    totals.conversions_number,
    cast(totals.conversions_amount_wo_tax as decimal(38, 2)) as conversions_amount_wo_tax,
    cast(totals.conversions_amount_w_tax as decimal(38, 2)) as conversions_amount_w_tax,
    '{{ var("reference_currency") }}' as currency,
    -- Like the API, an empty selection averages 0.
    coalesce(
        {{ round_half_up_divide('totals.conversions_amount_w_tax', 'totals.conversions_number') }},
        0
    ) as average_conversion,
    totals.unique_contacts,
    coalesce(
        {{ round_half_up_divide('totals.conversions_amount_w_tax', 'totals.unique_contacts') }},
        0
    ) as average_unique_conversion,
    coalesce(breakdown.breakdown, []) as breakdown
from totals
cross join breakdown
{% endmacro %}
