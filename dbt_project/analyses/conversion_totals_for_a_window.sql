-- GET /conversions/totals?dateFrom=2026-06-01&dateTo=2026-06-30&country=CZ,SK&currency=CZK,EUR
-- reproduced from the warehouse. `dbt compile --select conversion_totals_for_a_window` writes the
-- SQL to target/compiled/; or run any variant directly:
--   dbt show --inline "{{ conversion_totals(date_from='2026-06-01', countries=['CZ']) }}"
{{ conversion_totals(
    date_from='2026-06-01',
    date_to='2026-06-30',
    countries=['CZ', 'SK'],
    currencies=['CZK', 'EUR'],
) }}
