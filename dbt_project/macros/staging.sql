{#- Reading raw tables loaded by dlt into the staging layer. -#}

{% macro incomaker_source(table_name, columns, meta_columns) %}
{#-
    Select `columns` (a list of [name, type]) and `meta_columns` from the raw table `table_name`,
    each cast to its staging type.

    dlt creates a column only once it has seen a non-null value, and a table only once it has seen
    a record: a column it has not created comes out as a typed null and a table it has not created
    as an empty set, so the staging views build (and the marts stay empty, not broken) before the
    first load that carries them.
-#}
{%- set relation = source('incomaker_raw', table_name) -%}
{%- set existing = [] -%}
{%- set found = none -%}
{%- if execute -%}
    {%- set found = load_relation(relation) -%}
    {%- if found is not none -%}
        {%- for column in adapter.get_columns_in_relation(found) -%}
            {%- do existing.append(column.name | lower) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endif %}
    select
    {%- for name, type in meta_columns + columns %}
        {% if execute and name not in existing -%}
        cast(null as {{ type }})
        {%- elif type == 'timestamp' -%}
        {{ incomaker_utc_timestamp(name) }}
        {%- else -%}
        cast({{ name }} as {{ type }})
        {%- endif %} as {{ name }}{{ "," if not loop.last }}
    {%- endfor %}
    {% if not execute or found is not none -%}
    from {{ relation }}
    {%- else -%}
    from (select 1) as missing_table
    where false
    {%- endif %}
{% endmacro %}


{% macro incomaker_utc_timestamp(column) -%}
    {#- dlt stores timestamps as timestamptz; the warehouse shows naive UTC timestamps. -#}
    timezone('UTC', cast({{ column }} as timestamptz))
{%- endmacro %}


{% macro dlt_loaded_at(load_id_column='_dlt_load_id') -%}
    {#- A dlt load id is the load's start as Unix seconds. -#}
    timezone('UTC', to_timestamp(try_cast({{ load_id_column }} as double)))
{%- endmacro %}


{% macro latest_per_key(relation, key_columns) %}
    {#- The latest load's version of each key: dlt merges on the key, this guards against
        duplicates a replayed or partial load may leave. -#}
    select *
    from {{ relation }}
    qualify row_number() over (
        partition by {{ key_columns | join(', ') }}
        order by try_cast(_dlt_load_id as double) desc, _dlt_id desc
    ) = 1
{% endmacro %}
