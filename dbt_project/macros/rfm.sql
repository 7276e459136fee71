{% macro rfm_segment(r_score, f_score) -%}
    {#- The named segment of an (R, F) score pair (docs/world.md, "RFM"); M does not name. -#}
    case
        when {{ r_score }} = 1 and {{ f_score }} = 1 then 'Lost'
        when {{ r_score }} <= 2 and {{ f_score }} <= 2 then 'Hibernating'
        when {{ r_score }} <= 2 and {{ f_score }} <= 4 then 'At Risk'
        when {{ r_score }} <= 2 and {{ f_score }} = 5 then 'Can''t Lose Them'
        when {{ r_score }} = 3 and {{ f_score }} <= 2 then 'About to Sleep'
        when {{ r_score }} = 3 and {{ f_score }} = 3 then 'Need Attention'
        when {{ r_score }} in (3, 4) and {{ f_score }} >= 4 then 'Loyal'
        when {{ r_score }} = 4 and {{ f_score }} = 1 then 'Promising'
        when {{ r_score }} = 5 and {{ f_score }} = 1 then 'New Customers'
        when {{ r_score }} in (4, 5) and {{ f_score }} in (2, 3) then 'Potential Loyalist'
        when {{ r_score }} = 5 and {{ f_score }} >= 4 then 'Champions'
    end
{%- endmacro %}


{% macro rfm_segment_names() -%}
    {{ return(["Champions", "Loyal", "Potential Loyalist", "New Customers", "Promising",
               "Need Attention", "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating",
               "Lost"]) }}
{%- endmacro %}


{% macro rfm_heatmap(x_score, y_score) %}
-- Contacts and monetary value per ({{ x_score }}, {{ y_score }}) cell of the RFM grid; all 25
-- cells, empty ones with zero contacts.
with contacts as (
    select
        {{ x_score }},
        {{ y_score }},
        monetary
    from {{ ref('rfm_contacts') }}
),

grid as (
    select
        cast(x.score as integer) as {{ x_score }},
        cast(y.score as integer) as {{ y_score }}
    from range(1, 6) as x (score)
    cross join range(1, 6) as y (score)
),

cells as (
    select
        {{ x_score }},
        {{ y_score }},
        count(*) as contacts_count,
        sum(monetary) as monetary
    from contacts
    group by {{ x_score }}, {{ y_score }}
),

population as (
    select count(*) as contacts_total
    from contacts
)

select
    grid.{{ x_score }},
    grid.{{ y_score }},
    coalesce(cells.contacts_count, 0) as contacts_count,
    {{ round_half_up_divide('coalesce(cells.contacts_count, 0) * 100', 'population.contacts_total') }}
        as share,
    '{{ var("reference_currency") }}' as reference_currency,
    cast(coalesce(cells.monetary, 0) as decimal(38, 2)) as monetary,
    {{ round_half_up_divide('cells.monetary', 'cells.contacts_count') }} as average_monetary
from grid
cross join population
left join cells
    on grid.{{ x_score }} = cells.{{ x_score }}
    and grid.{{ y_score }} = cells.{{ y_score }}
{% endmacro %}
