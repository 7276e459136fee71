-- Every contact with an order in the RFM window: recency, frequency, monetary, scores, cell,
-- segment and outlier flag.
with scored as (
    select
        contact_id,
        analysis_date,
        window_start,
        recency_days,
        frequency,
        monetary,
        first_order_at,
        last_order_at,
        r_score,
        f_score,
        m_score
    from {{ ref('int_rfm__contacts_scored') }}
),

monetary_quartiles as (
    -- Linear interpolation between order statistics (quantile_cont), on the exact values.
    select
        quantile_cont(cast(monetary as double), 0.25) as q1,
        quantile_cont(cast(monetary as double), 0.5) as median,
        quantile_cont(cast(monetary as double), 0.75) as q3
    from scored
),

bounds as (
    select
        median,
        q3 + {{ var('rfm_outlier_iqr_multiplier') }} * (q3 - q1) as outlier_threshold
    from monetary_quartiles
),

segmented as (
    select
        scored.contact_id,
        scored.analysis_date,
        scored.window_start,
        scored.recency_days,
        scored.frequency,
        scored.monetary,
        scored.first_order_at,
        scored.last_order_at,
        scored.r_score,
        scored.f_score,
        scored.m_score,
        cast(scored.r_score as varchar) || cast(scored.f_score as varchar)
            || cast(scored.m_score as varchar) as cell,
        {{ rfm_segment('scored.r_score', 'scored.f_score') }} as segment,
        bounds.outlier_threshold,
        bounds.median as median_monetary
    from scored
    cross join bounds
)

select
    contact_id,
    analysis_date,
    window_start,
    recency_days,
    frequency,
    '{{ var("reference_currency") }}' as reference_currency,
    monetary,
    first_order_at,
    last_order_at,
    r_score,
    f_score,
    m_score,
    cell,
    segment,
    cast(monetary as double) > outlier_threshold as is_outlier,
    round(outlier_threshold, 2) as outlier_threshold,
    segment in ('At Risk', 'Can''t Lose Them') and cast(monetary as double) >= median_monetary
        as is_review_candidate
from segmented
