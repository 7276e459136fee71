-- The RFM analysis window: one row. The analysis date is var `rfm_analysis_date`, or the date of
-- the latest order in the warehouse; the window is the var `rfm_window_days` days ending on it.
{%- set analysis_date = var('rfm_analysis_date') %}
with orders as (
    select created_at
    from {{ ref('stg_incomaker__orders') }}
),

analysis as (
    select
        {% if analysis_date -%}
        cast('{{ analysis_date }}' as date)
        {%- else -%}
        (select max(cast(created_at as date)) from orders)
        {%- endif %} as analysis_date
)

select
    analysis_date,
    cast(analysis_date - interval ({{ var('rfm_window_days') }} - 1) day as date) as window_start,
    {{ var('rfm_window_days') }} as window_days
from analysis
