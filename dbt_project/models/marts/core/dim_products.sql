-- One row per product, with its category and parent category.
with products as (
    select
        product_id,
        name,
        category_id,
        price_w_tax,
        currency,
        created_at,
        updated_at,
        active
    from {{ ref('stg_incomaker__products') }}
),

details as (
    select
        product_id,
        description
    from {{ ref('stg_incomaker__product_detail') }}
),

categories as (
    select
        category_id,
        name,
        parent_category_id
    from {{ ref('stg_incomaker__product_categories') }}
)

select
    products.product_id,
    products.name,
    details.description,
    products.category_id,
    categories.name as category_name,
    categories.parent_category_id,
    parent_categories.name as parent_category_name,
    products.price_w_tax,
    products.currency,
    products.created_at,
    products.updated_at,
    coalesce(products.active, false) as is_active
from products
left join details
    on products.product_id = details.product_id
left join categories
    on products.category_id = categories.category_id
left join categories as parent_categories
    on categories.parent_category_id = parent_categories.category_id
