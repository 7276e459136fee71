-- The breakdown of conversion_totals as rows: one per currency, whole history.
{{ conversion_totals_by_currency() }}
