-- Histograms of recency, frequency and monetary: per dimension and score, the range of values and
-- the number of contacts.
with contacts as (
    select
        recency_days,
        frequency,
        monetary,
        r_score,
        f_score,
        m_score
    from {{ ref('rfm_contacts') }}
),

unpivoted as (
    select 'recency' as dimension, r_score as score, cast(recency_days as decimal(38, 2)) as value
    from contacts
    union all
    select 'frequency' as dimension, f_score as score, cast(frequency as decimal(38, 2)) as value
    from contacts
    union all
    select 'monetary' as dimension, m_score as score, cast(monetary as decimal(38, 2)) as value
    from contacts
)

select
    dimension,
    score,
    min(value) as min_value,
    max(value) as max_value,
    count(*) as contacts_count
from unpivoted
group by dimension, score
