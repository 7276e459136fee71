{% macro round_half_up_divide(numerator, denominator, places=2) -%}
    {#- numerator / denominator rounded half up (away from zero) to `places` decimals, in exact
        integer arithmetic: the API rounds averages half up (docs/world.md, "Money"), and DuckDB's
        decimal division goes through double, which would round some halves down. The numerator
        is a decimal with at most `places` decimals, the denominator a positive integer; the
        result is null when the denominator is 0. -#}
    {%- set factor = 10 ** places -%}
    {%- set unit = '0.' ~ '0' * (places - 1) ~ '1' -%}
    case
        when ({{ denominator }}) > 0 then
            cast(
                sign({{ numerator }})
                * ((abs(cast(({{ numerator }}) * {{ factor }} as hugeint)) * 2
                    + ({{ denominator }})) // (2 * ({{ denominator }})))
                as decimal(38, 0)
            ) * cast({{ unit }} as decimal(18, {{ places }}))
    end
{%- endmacro %}


{% macro safe_ratio(numerator, denominator, places=6) -%}
    {#- A rate: numerator / denominator rounded to `places` decimals, null when nothing to divide by. -#}
    round(cast({{ numerator }} as double) / nullif({{ denominator }}, 0), {{ places }})
{%- endmacro %}
