"""The raw tables' columns as dlt is told them, from a catalogue entry: names (dlt's snake_case),
types, merge keys and the columns dlt and the pipeline add. No pyarrow or dlt here: the Dagster
definitions read these for the raw assets' column schemas (orchestration/raw_metadata.py), and
their load must not pay for either (records.py decodes pages with them).
"""

from __future__ import annotations

from typing import Any

from incomaker_elt.contract.catalogue import Operation
from incomaker_elt.contract.columns import snake
from incomaker_elt.ingestion.values import RAW_SUFFIX

SNAPSHOT_DATE = "_snapshot_date"
PARAMS = "_params"
"""Columns every aggregate record gets: the day of the snapshot and the query that produced it."""

DLT_ID = "_dlt_id"


def has_nested_lists(op: Operation) -> bool:
    return "list" in op.fields.values() or any("list" in s.values() for s in op.nested.values())


# ----------------------------------------------------------------------------- column hints

_HINT_TYPES: dict[str, dict[str, Any]] = {
    "string": {"data_type": "text"},
    "integer": {"data_type": "bigint"},
    "decimal": {"data_type": "decimal", "precision": 38, "scale": 9},
    "boolean": {"data_type": "bool"},
    "date": {"data_type": "date"},
    "timestamp": {"data_type": "timestamp", "timezone": True},
}


_TEXT_LOOKS_TYPED = ("date", "timestamp")
"""Fields whose exact text dlt's normaliser would read as a timestamp again (its ISO detection):
on the dict path their `<column>__raw` is declared text up front."""


def _hints_for(
    fields: dict[str, str], prefix: str = "", raw_text: bool = False
) -> dict[str, dict[str, Any]]:
    columns: dict[str, dict[str, Any]] = {}
    for name, kind in fields.items():
        if kind in _HINT_TYPES:
            column = prefix + snake(name)
            columns[column] = {"name": column, "nullable": True, **_HINT_TYPES[kind]}
            if raw_text and kind in _TEXT_LOOKS_TYPED:
                raw = column + RAW_SUFFIX
                columns[raw] = {"name": raw, "nullable": True, "data_type": "text"}
    return columns


def column_hints(op: Operation) -> dict[str, dict[str, Any]]:
    """Typed columns of the operation's table; object fields flatten to <field>__<sub>."""
    dict_path = has_nested_lists(op)
    columns = _hints_for(op.fields, raw_text=dict_path)
    for name, kind in op.fields.items():
        if kind == "object":
            sub = op.nested.get(name, {})
            columns.update(_hints_for(sub, prefix=f"{snake(name)}__", raw_text=dict_path))
    for key in primary_key(op):
        columns.setdefault(key, {"name": key})["nullable"] = False
    if not has_nested_lists(op):
        # The Arrow path brings its own row ids (see row_ids); dlt's normaliser adds the rest.
        columns[DLT_ID] = {"name": DLT_ID, "data_type": "text", "nullable": False, "unique": True}
    if op.kind == "aggregate":
        columns[SNAPSHOT_DATE] = {"name": SNAPSHOT_DATE, "data_type": "date", "nullable": False}
        columns[PARAMS] = {"name": PARAMS, "data_type": "text", "nullable": False}
    return columns


def nested_hints(op: Operation) -> dict[tuple[str, ...], dict[str, Any]]:
    """Typed columns of the child tables made from list fields, keyed by their path."""
    result: dict[tuple[str, ...], dict[str, Any]] = {}
    for dotted, sub in op.nested.items():
        path = tuple(dotted.split("."))
        owner = op.fields if len(path) == 1 else op.nested.get(path[0], {})
        if owner.get(path[-1]) != "list":
            continue
        # A list inside an object lives at <object>__<list>: dlt's path is the flattened name.
        key = (snake(path[0]),) if len(path) == 1 else ("__".join(snake(p) for p in path),)
        result[key] = {"columns": _hints_for(sub, raw_text=True)}
    return result


def primary_key(op: Operation) -> tuple[str, ...]:
    """The merge key: aggregates are keyed by snapshot day and parameters first."""
    keys = tuple(snake(k) for k in op.primary_key)
    if op.kind == "aggregate":
        return (SNAPSHOT_DATE, PARAMS, *keys)
    return keys
