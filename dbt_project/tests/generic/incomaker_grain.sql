{#- The grain test: `columns` identify a row. Fails for every key with a null part or more than
    one row; one query instead of a not_null per column plus a uniqueness test. -#}
{% test incomaker_grain(model, columns) %}
    select
        {{ columns | join(', ') }},
        count(*) as occurrences
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
        {%- for column in columns %}
        or {{ column }} is null
        {%- endfor %}
{% endtest %}
