-- One row per one-off campaign: what was sent, by whom, to which segment, and its A/B test.
with campaigns as (
    select
        campaign_id,
        name,
        subject,
        language,
        sender_id,
        segment_id,
        sent_at,
        ab_test,
        recipients_count
    from {{ ref('stg_incomaker__campaigns') }}
),

senders as (
    select
        sender_id,
        name,
        email
    from {{ ref('stg_incomaker__senders') }}
),

segments as (
    select
        segment_id,
        name
    from {{ ref('stg_incomaker__segments') }}
),

ab_tests as (
    select
        campaign_id,
        ab_test_id,
        winner_variant
    from {{ ref('stg_incomaker__campaign_ab_tests') }}
    qualify row_number() over (partition by campaign_id order by ab_test_id desc) = 1
)

select
    campaigns.campaign_id,
    'campaign-' || campaigns.campaign_id as delivery_key,
    campaigns.name,
    campaigns.subject,
    campaigns.language,
    campaigns.sent_at,
    campaigns.sender_id,
    senders.name as sender_name,
    senders.email as sender_email,
    campaigns.segment_id,
    segments.name as segment_name,
    campaigns.recipients_count,
    coalesce(campaigns.ab_test, false) as has_ab_test,
    ab_tests.ab_test_id,
    ab_tests.winner_variant as ab_test_winner_variant
from campaigns
left join senders
    on campaigns.sender_id = senders.sender_id
left join segments
    on campaigns.segment_id = segments.segment_id
left join ab_tests
    on campaigns.campaign_id = ab_tests.campaign_id
