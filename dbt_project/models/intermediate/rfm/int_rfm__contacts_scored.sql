-- R, F and M scores 1..5 by quintile (NTILE(5): groups differ in size by at most one, the first
-- n mod 5 one larger). Ties are broken by contact id ascending so that scores are reproducible;
-- R sorts recency descending, so the most recent buyers score 5.
with metrics as (
    select
        contact_id,
        analysis_date,
        window_start,
        recency_days,
        frequency,
        monetary,
        first_order_at,
        last_order_at
    from {{ ref('int_rfm__contacts_aggregated') }}
)

select
    contact_id,
    analysis_date,
    window_start,
    recency_days,
    frequency,
    monetary,
    first_order_at,
    last_order_at,
    cast(ntile(5) over (order by recency_days desc, contact_id asc) as integer) as r_score,
    cast(ntile(5) over (order by frequency asc, contact_id asc) as integer) as f_score,
    cast(ntile(5) over (order by monetary asc, contact_id asc) as integer) as m_score
from metrics
