-- Our RFM segments beside the API's own (GET /rfm/segments), for the API snapshots taken with the
-- same window as ours. Segments empty on both sides are left out.
with ours as (
    select
        segment,
        contacts_count,
        share,
        monetary,
        average_recency_days,
        average_frequency,
        average_monetary
    from {{ ref('rfm_segments') }}
),

rfm_window as (
    select
        analysis_date,
        window_start
    from {{ ref('int_rfm__window_resolved') }}
),

api_snapshots as (
    select
        snapshot_date,
        query_params,
        segment,
        contacts_count,
        share,
        monetary
    from {{ ref('stg_incomaker__rfm_segments') }}
),

api as (
    select
        api_snapshots.snapshot_date,
        api_snapshots.segment,
        api_snapshots.contacts_count,
        api_snapshots.share,
        api_snapshots.monetary
    from api_snapshots
    inner join rfm_window
        on try_cast(json_extract_string(api_snapshots.query_params, '$.dateTo') as date)
            = rfm_window.analysis_date
        and try_cast(json_extract_string(api_snapshots.query_params, '$.dateFrom') as date)
            = rfm_window.window_start
    -- the latest snapshot taken with our window
    qualify api_snapshots.snapshot_date = max(api_snapshots.snapshot_date) over ()
),

compared as (
    select
        coalesce(ours.segment, api.segment) as segment,
        api.snapshot_date as api_snapshot_date,
        coalesce(ours.contacts_count, 0) as contacts_count,
        coalesce(api.contacts_count, 0) as api_contacts_count,
        ours.share,
        api.share as api_share,
        coalesce(ours.monetary, 0) as monetary,
        coalesce(api.monetary, 0) as api_monetary
    from ours
    full outer join api
        on ours.segment = api.segment
)

select
    segment,
    api_snapshot_date,
    contacts_count,
    api_contacts_count,
    share,
    api_share,
    monetary,
    api_monetary,
    contacts_count = api_contacts_count and monetary = api_monetary as matches_api
from compared
where contacts_count > 0 or api_contacts_count > 0
