{#- Reading raw tables loaded by dlt into the staging layer. -#}

{% macro incomaker_source(table_name, columns, meta_columns) %}
{#-
    Select `columns` (a list of [name, type]) and `meta_columns` from the raw table `table_name`,
    each cast to its staging type.

    dlt creates a column only once it has seen a non-null value, and a table only once it has seen
    a record: a column it has not created comes out as a typed null and a table it has not created
    as an empty set, so the staging views build (and the marts stay empty, not broken) before the
    first load that carries them.

    A whole-number column that the raw table holds as text stays text: the API sends those ids as
    strings (UUIDs) and a catalogue override typed them `string`, so casting them to a number would
    fail every read. Likewise where ingestion kept values that did not fit as text beside the
    column (`<column>__raw`, see incomaker_elt/ingestion/values.py): the id is shown as text, the number or the
    kept text, so a reference to a UUID-keyed record still joins it before the override is set.
-#}
{%- set relation = source('incomaker_raw', table_name) -%}
{%- set existing = [] -%}
{%- set text_columns = [] -%}
{%- set found = none -%}
{%- if execute -%}
    {%- set found = load_relation(relation) -%}
    {%- if found is not none -%}
        {%- for column in adapter.get_columns_in_relation(found) -%}
            {%- do existing.append(column.name | lower) -%}
            {%- if column.dtype | upper in ('VARCHAR', 'TEXT', 'STRING') -%}
                {%- do text_columns.append(column.name | lower) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endif %}
    select
    {%- for name, type in meta_columns + columns %}
        {% if execute and name not in existing -%}
        cast(null as {{ type }})
        {%- elif type == 'bigint' and name in text_columns -%}
        cast({{ name }} as varchar)
        {%- elif type == 'bigint' and (name ~ '__raw') in existing -%}
        coalesce(cast({{ name }} as varchar), {{ name }}__raw)
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


{#- What the API still returns. dlt merges on the key, so a record the API stopped returning
    stays in the raw table with the load that last saw it; these keep the rows a fresh full load
    would have, given how each operation is fetched (dbt_project/DECISIONS.md, "Current rows"). -#}

{% macro _load_order(load_id_column='_dlt_load_id') -%}
    try_cast({{ load_id_column }} as double)
{%- endmacro %}


{% macro _partition_by(columns) -%}
    {%- if columns %}partition by {{ columns | join(', ') }}{% endif -%}
{%- endmacro %}


{% macro from_latest_fetch(relation, partition_columns=[]) %}
    {#- A listing fetched whole by every run (per parent id when a run fetches it only for some
        parents): its latest fetch is the whole truth, rows only older fetches returned are gone. -#}
    select *
    from {{ relation }}
    qualify {{ _load_order() }} = max({{ _load_order() }}) over ({{ _partition_by(partition_columns) }})
{% endmacro %}


{% macro still_listed_by_parent(relation, column, parent_model, latest_snapshot) %}
    {#- A detail asked for only when its parent is new or changed, of a parent listed whole every
        run: a row is gone once the parent's latest listing no longer holds its id (an RFM
        contact no longer scored, a product no longer sold). -#}
    select *
    from {{ relation }}
    where {{ column }} in (
        select {{ column }}
        from {{ ref(parent_model) }}
        {%- if latest_snapshot %}
        where is_latest_snapshot
        {%- endif %}
    )
{% endmacro %}


{% macro not_superseded_by_later_fetch(relation, window_column, partition_columns=[]) %}
    {#- A windowed listing: each fetch returns everything the API holds in its window, so a row
        is gone once a later fetch covered its window value and did not return it. A fetch's
        coverage is taken as the range of the window values it returned (its rows that are still
        the latest version), which lies inside the window it asked for: never too wide.
        Loads are few and rows many: a row is checked against the later fetches one by one only
        when it lies within the span of all of them (candidates: the gone rows, and a few more). -#}
    {%- set keys = ['_dlt_load_id'] + partition_columns -%}
    with fetched as (
        select
            {{ keys | join(', ') }},
            {{ _load_order() }} as load_order,
            min({{ window_column }}) as covered_from,
            max({{ window_column }}) as covered_to
        from {{ relation }}
        group by all
    ),

    later_span as (
        select
            {%- for key in keys %}
            earlier.{{ key }},
            {%- endfor %}
            earlier.load_order,
            min(later.covered_from) as span_from,
            max(later.covered_to) as span_to
        from fetched as earlier
        inner join fetched as later
            on later.load_order > earlier.load_order
            {%- for column in partition_columns %}
            and later.{{ column }} = earlier.{{ column }}
            {%- endfor %}
        group by all
    ),

    candidates as materialized (
        select
            kept._dlt_id,
            {%- for column in partition_columns %}
            kept.{{ column }},
            {%- endfor %}
            kept.{{ window_column }},
            later_span.load_order
        from {{ relation }} as kept
        inner join later_span
            on kept._dlt_load_id = later_span._dlt_load_id
            {%- for column in partition_columns %}
            and kept.{{ column }} = later_span.{{ column }}
            {%- endfor %}
        where kept.{{ window_column }} between later_span.span_from and later_span.span_to
    ),

    superseded as (
        select distinct candidates._dlt_id
        from candidates
        inner join fetched as later
            on later.load_order > candidates.load_order
            {%- for column in partition_columns %}
            and later.{{ column }} = candidates.{{ column }}
            {%- endfor %}
            and candidates.{{ window_column }} between later.covered_from and later.covered_to
    )

    select *
    from {{ relation }}
    where _dlt_id not in (select superseded._dlt_id from superseded)
{% endmacro %}


{% macro is_latest_snapshot(partition_columns=[]) -%}
    {#- An aggregate row is current when the latest snapshot returned it: the latest load of the
        newest snapshot date (per parent id when a run snapshots only some parents). Not the
        newest row per key: a key the latest snapshot left out (an RFM cell that emptied) is gone.
        Not per query either: a window ending on each run's today gives every day its own. -#}
    _dlt_load_id = first_value(_dlt_load_id) over (
        {{ _partition_by(partition_columns) }}
        order by _snapshot_date desc, {{ _load_order() }} desc
    )
{%- endmacro %}
