-- The API's ConversionAggregate (GET /conversions/totals) over the whole history: one row.
-- For a window or a country/currency filter, call the macro with arguments (macros/conversion_totals.sql).
{{ conversion_totals() }}
