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
    -- Linear interpolation between order statistics (quantile_cont), in exact hundredths.
    select
        quantile_cont(cast(monetary * 100 as bigint), 0.25) as q1_cents,
        quantile_cont(cast(monetary * 100 as bigint), 0.5) as median_cents,
        quantile_cont(cast(monetary * 100 as bigint), 0.75) as q3_cents
    from scored
),

bounds as (
    select
        median_cents,
        q3_cents + {{ var('rfm_outlier_iqr_multiplier') }} * (q3_cents - q1_cents)
            as outlier_threshold_cents
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
        cast(scored.monetary * 100 as bigint) as monetary_cents,
        bounds.outlier_threshold_cents,
        bounds.median_cents
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
    monetary_cents > outlier_threshold_cents as is_outlier,
    cast(round(outlier_threshold_cents) as decimal(38, 0)) * 0.01 as outlier_threshold,
    segment in ('At Risk', 'Can''t Lose Them') and monetary_cents >= median_cents
        as is_review_candidate
from segmented
