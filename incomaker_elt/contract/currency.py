"""The currency of the API's `...Reference` amounts: a fact of the Incomaker contract."""

REFERENCE_CURRENCY = "CZK"
"""Currency in which Incomaker reports `...Reference` amounts and in which the marts sum money."""
