-- Every conversion the API lists is attributed to the e-mail our own attribution picks (latest
-- send opened within the attribution window). A warning, not an error: it checks the API's rule
-- and our reading of it, and the marts use the API's attribution either way.
{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'int_conversions__attribution_checked'}}}) }}

with checked as (
    select
        order_id,
        attributed_delivery_key,
        api_conversion_id,
        api_delivery_key,
        api_agrees
    from {{ ref('int_conversions__attribution_checked') }}
)

select
    order_id,
    attributed_delivery_key,
    api_conversion_id,
    api_delivery_key
from checked
where api_conversion_id is not null
    and not api_agrees
