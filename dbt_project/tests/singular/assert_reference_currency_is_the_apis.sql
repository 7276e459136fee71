-- The marts label `_reference` amounts with var `reference_currency`; the API says which currency
-- they are in (ConversionAggregate.conversions.currency). They must agree. A check on the
-- model it reads, named so that it stays there if the test ever reads a second model.
{{ config(meta={'dagster': {'ref': {'name': 'stg_incomaker__conversions_totals'}}}) }}

with snapshots as (
    select
        snapshot_date,
        query_params,
        currency
    from {{ ref('stg_incomaker__conversions_totals') }}
)

select
    snapshot_date,
    query_params,
    currency
from snapshots
where currency is not null
    and currency <> '{{ var("reference_currency") }}'
