-- Our RFM figures per contact beside the API's contact RFM detail (GET /rfm/contacts/{id}) where
-- the API analysed the same date as we did. The ingestion asks for the detail of every contact the
-- API scores on each run, so after any run that is every scored contact, as in a full load.
with ours as (
    select
        contact_id,
        analysis_date,
        recency_days,
        frequency,
        monetary,
        r_score,
        f_score,
        m_score,
        segment
    from {{ ref('rfm_contacts') }}
),

api as (
    select
        contact_id,
        analysis_date,
        has_orders,
        recency_days,
        frequency,
        monetary,
        r,
        f,
        m,
        segment
    from {{ ref('stg_incomaker__rfm_contact_detail') }}
    where has_orders
),

rfm_window as (
    select analysis_date
    from {{ ref('int_rfm__window_resolved') }}
),

api_same_date as (
    select
        api.contact_id,
        api.recency_days,
        api.frequency,
        api.monetary,
        api.r,
        api.f,
        api.m,
        api.segment
    from api
    inner join rfm_window
        on api.analysis_date = rfm_window.analysis_date
)

select
    coalesce(ours.contact_id, api_same_date.contact_id) as contact_id,
    ours.recency_days,
    api_same_date.recency_days as api_recency_days,
    ours.frequency,
    api_same_date.frequency as api_frequency,
    ours.monetary,
    api_same_date.monetary as api_monetary,
    ours.r_score,
    api_same_date.r as api_r_score,
    ours.f_score,
    api_same_date.f as api_f_score,
    ours.m_score,
    api_same_date.m as api_m_score,
    ours.segment,
    api_same_date.segment as api_segment,
    ours.recency_days is not distinct from api_same_date.recency_days
        and ours.frequency is not distinct from api_same_date.frequency
        and ours.monetary is not distinct from api_same_date.monetary
        and ours.r_score is not distinct from api_same_date.r
        and ours.f_score is not distinct from api_same_date.f
        and ours.m_score is not distinct from api_same_date.m
        and ours.segment is not distinct from api_same_date.segment as matches_api
from ours
inner join api_same_date
    on ours.contact_id = api_same_date.contact_id
