"""Column names of the raw tables: the name dlt gives each API field, which staging reads."""

from functools import cache

from dlt.common.normalizers.naming.snake_case import NamingConvention

_naming = NamingConvention()


@cache
def snake(name: str) -> str:
    """The column name dlt gives a field: amountWTax -> amount_w_tax (amountWTax__raw ->
    amount_w_tax__raw: `__` separates a path, as in dlt's own normaliser)."""
    return _naming.normalize_path(name)
