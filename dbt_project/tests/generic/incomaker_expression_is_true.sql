{#- Fails for every row where `expression` is false (null counts as true: an undefined rate is
    not a broken one). Invariants such as `unique_opens <= opens` are written with it. -#}
{% test incomaker_expression_is_true(model, expression) %}
    select *
    from {{ model }}
    where not coalesce(({{ expression }}), true)
{% endtest %}
