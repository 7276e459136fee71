"""incomaker-elt: the Incomaker Reporting API into a DuckDB warehouse."""
