-- Our RFM figures per contact beside the API's for the same analysis window: every contact the
-- API scores, as its cells list them (GET /rfm/cells/{cell}/contacts, read whole on each run),
-- with the scores and segment of the cell (GET /rfm/cells/{cell}). The per-contact detail
-- (GET /rfm/contacts/{id}) is asked for only when a contact's RFM changed, so it is not the
-- comparison's source (dbt_project/DECISIONS.md, "What the lookbacks cost").
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

rfm_window as (
    select
        analysis_date,
        window_start
    from {{ ref('int_rfm__window_resolved') }}
),

api_contacts as (
    select
        contact_id,
        cell,
        recency_days,
        frequency,
        monetary,
        query_params
    from {{ ref('stg_incomaker__rfm_cell_contacts') }}
    where is_latest_snapshot
),

api_cells as (
    select
        cell,
        r,
        f,
        m,
        segment
    from {{ ref('stg_incomaker__rfm_cell_detail') }}
    where is_latest_snapshot
),

api_same_date as (
    select
        api_contacts.contact_id,
        api_contacts.recency_days,
        api_contacts.frequency,
        api_contacts.monetary,
        api_cells.r,
        api_cells.f,
        api_cells.m,
        api_cells.segment
    from api_contacts
    inner join rfm_window
        on try_cast(json_extract_string(api_contacts.query_params, '$.dateTo') as date)
            = rfm_window.analysis_date
        and try_cast(json_extract_string(api_contacts.query_params, '$.dateFrom') as date)
            = rfm_window.window_start
    left join api_cells
        on api_contacts.cell = api_cells.cell
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
