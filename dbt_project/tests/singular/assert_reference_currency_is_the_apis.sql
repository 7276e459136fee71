-- The marts label `_reference` amounts with var `reference_currency`; the API says which currency
-- they are in (ConversionAggregate.conversions.currency). They must agree.
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
