-- One row per contact: profile, subscription, data-quality flags, order history and RFM segment.
with contacts as (
    select
        contact_id,
        email,
        first_name,
        last_name,
        language,
        gender,
        country,
        created_at,
        updated_at,
        unsubscribed,
        orders_count,
        last_order_at
    from {{ ref('stg_incomaker__contacts') }}
),

details as (
    select
        contact_id,
        unsubscribed_at,
        total_spent_w_tax_reference,
        first_order_at
    from {{ ref('stg_incomaker__contacts_details') }}
),

segments as (
    select
        contact_id,
        segment_id,
        name
    from {{ ref('stg_incomaker__contacts_details_segments') }}
),

duplicates as (
    select
        contact_id,
        duplicate_of_contact_id,
        matched_by
    from {{ ref('stg_incomaker__contacts_duplicates') }}
),

invalid_names as (
    select
        contact_id,
        reason
    from {{ ref('stg_incomaker__contacts_invalid_names') }}
),

rfm as (
    select
        contact_id,
        cell,
        segment
    from {{ ref('rfm_contacts') }}
),

contact_segments as (
    select
        contact_id,
        list(name order by segment_id) as segment_names
    from segments
    group by contact_id
)

select
    contacts.contact_id,
    contacts.email,
    contacts.first_name,
    contacts.last_name,
    contacts.language,
    contacts.gender,
    contacts.country,
    contacts.created_at,
    contacts.updated_at,
    coalesce(contacts.unsubscribed, false) as is_unsubscribed,
    details.unsubscribed_at,
    duplicates.contact_id is not null as is_duplicate,
    duplicates.duplicate_of_contact_id,
    duplicates.matched_by as duplicate_matched_by,
    invalid_names.contact_id is not null as has_invalid_name,
    invalid_names.reason as invalid_name_reason,
    contacts.orders_count,
    details.first_order_at,
    contacts.last_order_at,
    '{{ var("reference_currency") }}' as reference_currency,
    details.total_spent_w_tax_reference,
    contact_segments.segment_names,
    rfm.cell as rfm_cell,
    rfm.segment as rfm_segment
from contacts
left join details
    on contacts.contact_id = details.contact_id
left join duplicates
    on contacts.contact_id = duplicates.contact_id
left join invalid_names
    on contacts.contact_id = invalid_names.contact_id
left join contact_segments
    on contacts.contact_id = contact_segments.contact_id
left join rfm
    on contacts.contact_id = rfm.contact_id
