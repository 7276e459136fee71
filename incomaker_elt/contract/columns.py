"""Column names of the raw tables: the name dlt gives each API field, which staging reads.

dlt's snake_case naming convention is the one authority on these names. Importing dlt costs half
a second, which every load of the Dagster definitions would pay for the raw assets' column
schemas alone. So the names of the catalogue's fields are kept as dlt gives them in
`column_names.json`, written with the staging models (`python -m
incomaker_elt.contract.staging_models`; tests/test_dbt_project.py fails while it is stale), like
the staging SQL that reads the same names. A name not in it, a field that a catalogue override
adds, is asked of dlt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from incomaker_elt.contract.catalogue import Operation

KNOWN_NAMES_FILE = Path(__file__).with_name("column_names.json")


@cache
def _known() -> dict[str, str]:
    try:
        return json.loads(KNOWN_NAMES_FILE.read_text())
    except FileNotFoundError:
        return {}


@cache
def _naming() -> Any:
    from dlt.common.normalizers.naming.snake_case import NamingConvention

    return NamingConvention()


def dlt_snake(name: str) -> str:
    """The name as dlt's normaliser makes it (`__` separates a path, as in dlt's own)."""
    return _naming().normalize_path(name)


@cache
def snake(name: str) -> str:
    """The column name dlt gives a field: amountWTax -> amount_w_tax (amountWTax__raw ->
    amount_w_tax__raw: `__` separates a path, as in dlt's own normaliser)."""
    known = _known().get(name)
    return known if known is not None else dlt_snake(name)


def catalogue_names(operations: Iterable[Operation]) -> set[str]:
    """Every name of the catalogue that becomes a column or a table name."""
    names: set[str] = set()
    for op in operations:
        names.add(op.name)
        names.update(op.fields, op.primary_key, op.params)
        for dotted, sub in op.nested.items():
            names.update(dotted.split("."))
            names.update(sub)
        if op.window:
            names.add(op.window)
        if op.parent:
            names.update((op.parent.field, op.parent.into, *op.parent.days_before_today))
    return names


def known_names_text(operations: Iterable[Operation]) -> str:
    """`column_names.json` for these operations: each name as dlt gives it."""
    names = {name: dlt_snake(name) for name in sorted(catalogue_names(operations))}
    return json.dumps(names, indent=1, sort_keys=True) + "\n"
