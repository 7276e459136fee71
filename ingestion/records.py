"""From a catalogue entry to typed records: column hints, Arrow schemas and page decoders.

Two ways a page becomes records, chosen per operation:
- flat operations (no `list` field, which is nearly all the volume) take the Arrow path: the page
  body goes straight into pyarrow's C++ JSON reader with the catalogue's types, and dlt loads the
  Arrow tables as parquet. No Python object per row is ever made.
- operations with nested lists (an order's items, a contact's segments) take the dict path: orjson
  dicts that dlt's normaliser splits into child tables `<table>__<field>`.
Both give the same column names (dlt's snake_case) and the same types, taken from the catalogue.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json
from dlt.common.normalizers.naming.snake_case import NamingConvention

from ingestion.catalogue import Operation
from ingestion.client import BrokenBody
from ingestion.paging import WHOLE_BODY, PageTotals, dig

SNAPSHOT_DATE = "_snapshot_date"
PARAMS = "_params"
"""Columns every aggregate record gets: the day of the snapshot and the query that produced it."""

DLT_ID = "_dlt_id"
DECIMAL = pa.decimal128(38, 9)
"""dlt's default DuckDB decimal: money stays exact, scores and shares keep nine places."""

_naming = NamingConvention()


@cache
def snake(name: str) -> str:
    """The column name dlt gives a field: amountWTax -> amount_w_tax."""
    return _naming.normalize_identifier(name)


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


def _hints_for(fields: dict[str, str], prefix: str = "") -> dict[str, dict[str, Any]]:
    columns: dict[str, dict[str, Any]] = {}
    for name, kind in fields.items():
        if kind in _HINT_TYPES:
            column = prefix + snake(name)
            columns[column] = {"name": column, "nullable": True, **_HINT_TYPES[kind]}
    return columns


def column_hints(op: Operation) -> dict[str, dict[str, Any]]:
    """Typed columns of the operation's table; object fields flatten to <field>__<sub>."""
    columns = _hints_for(op.fields)
    for name, kind in op.fields.items():
        if kind == "object":
            columns.update(_hints_for(op.nested.get(name, {}), prefix=f"{snake(name)}__"))
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
        result[key] = {"columns": _hints_for(sub)}
    return result


def primary_key(op: Operation) -> tuple[str, ...]:
    """The merge key: aggregates are keyed by snapshot day and parameters first."""
    keys = tuple(snake(k) for k in op.primary_key)
    if op.kind == "aggregate":
        return (SNAPSHOT_DATE, PARAMS, *keys)
    return keys


# ----------------------------------------------------------------------------- Arrow path

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "decimal": DECIMAL,
    "boolean": pa.bool_(),
    # pyarrow's JSON reader cannot parse dates, so they are read as text and cast afterwards.
    "date": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def _struct_fields(
    fields: dict[str, str],
    nested: dict[str, dict[str, str]],
    api_names: dict[str, str] | None = None,
) -> list[pa.Field]:
    """The Arrow fields of a record, named as the API names them."""
    out = []
    for name, kind in fields.items():
        api_name = (api_names or {}).get(name, name)
        if kind == "object":
            out.append(pa.field(api_name, pa.struct(_struct_fields(nested.get(name, {}), {}))))
        elif kind in _ARROW_TYPES:
            out.append(pa.field(api_name, _ARROW_TYPES[kind]))
    return out


def empty_table(op: Operation) -> pa.Table:
    """No rows, all the catalogue's columns: loaded so that the table exists even when empty."""
    fields = []
    for name, kind in op.fields.items():
        if kind == "object":
            for sub, sub_kind in op.nested.get(name, {}).items():
                if sub_kind in _ARROW_TYPES:
                    fields.append((f"{snake(name)}__{snake(sub)}", _final_type(sub_kind)))
        elif kind in _ARROW_TYPES:
            fields.append((snake(name), _final_type(kind)))
    if op.kind == "aggregate":
        fields += [(SNAPSHOT_DATE, pa.date32()), (PARAMS, pa.string())]
    return pa.schema(fields).empty_table()


def _final_type(kind: str) -> pa.DataType:
    return pa.date32() if kind == "date" else _ARROW_TYPES[kind]


@dataclass(frozen=True)
class Page:
    """One decoded response: its records and what it says about the rest of the listing."""

    records: Any  # pa.Table on the Arrow path, list[dict] on the dict path
    rows: int
    totals: PageTotals = PageTotals()


def _flatten(table: pa.Table, op: Operation) -> pa.Table:
    """Struct columns to <field>__<sub>, names to snake_case, text dates to date32."""
    columns: list[pa.Array] = []
    names: list[str] = []

    def add(name: str, column: Any, kind: str | None, subfields: dict[str, str]) -> None:
        if pa.types.is_struct(column.type):
            for i in range(column.type.num_fields):
                sub = column.type.field(i).name
                child = pa.chunked_array(
                    [c.field(i) for c in column.chunks], type=column.type.field(i).type
                )
                add(f"{name}__{snake(sub)}", child, subfields.get(sub), {})
            return
        if kind == "date" and pa.types.is_string(column.type):
            column = column.cast(pa.date32())
        columns.append(column)
        names.append(name)

    contract = contract_names(op)
    for i, field in enumerate(table.schema):
        name = contract.get(field.name, field.name)
        add(snake(name), table.column(i), op.fields.get(name), op.nested.get(name, {}))
    return pa.Table.from_arrays(columns, names=names)


def contract_names(op: Operation) -> dict[str, str]:
    """The API's name of a field -> the catalogue's (contract) name, where they differ."""
    return {api: field for field, api in op.api_names.items()}


def _envelope(table: pa.Table, records_path: list[str]) -> dict[str, Any]:
    """The one-row body without its records, as Python values (paging, totals, links)."""
    top = records_path[0]
    envelope = table.select([c for c in table.column_names if c != top]).to_pylist()[0]
    if len(records_path) > 1 and top in table.column_names:
        column = table.column(top)
        if pa.types.is_struct(column.type):
            kept = [f.name for f in column.type if f.name != records_path[1]]
            struct = column.combine_chunks()
            envelope[top] = {name: struct.field(name)[0].as_py() for name in kept}
    return envelope


def _records_schema(path: list[str], record_list: pa.DataType) -> pa.Schema:
    """An explicit schema for the body: the records list at its (dotted) path."""
    node: pa.DataType = record_list
    for part in reversed(path[1:]):
        node = pa.struct([pa.field(part, node)])
    return pa.schema([pa.field(path[0], node)])


def arrow_decoder(op: Operation) -> Callable[[bytes], Page]:
    """Decoder of one response body into an Arrow table with the contract's columns."""
    record_type = pa.struct(_struct_fields(op.fields, op.nested, op.api_names))
    records_path = op.records_path
    whole_body = records_path == WHOLE_BODY
    path = records_path.split(".")
    if whole_body:
        schema = pa.schema(list(record_type))
    else:
        schema = _records_schema(path, pa.list_(record_type))
    # Fields the catalogue does not know (schema drift) are kept with inferred types.
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    multiline = pa_json.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="infer", newlines_in_values=True
    )

    def read(body: bytes) -> pa.Table:
        read_options = pa_json.ReadOptions(use_threads=False, block_size=max(len(body) + 1, 1024))
        stripped = body.strip()
        if not stripped.startswith(b"{"):
            raise BrokenBody(f"expected a JSON object, got {stripped[:40]!r}")
        # The reader takes one JSON document per line; a pretty-printed body needs the slower mode.
        parse = multiline if b"\n" in stripped else options
        try:
            table = pa_json.read_json(io.BytesIO(stripped), read_options, parse)
        except pa.ArrowInvalid as exc:
            if b"\n" not in stripped:
                return _fallback(stripped, exc)
            raise BrokenBody(str(exc)[:200]) from None
        if table.num_rows != 1:
            raise BrokenBody(f"expected one JSON object, got {table.num_rows}")
        return table

    def _fallback(body: bytes, exc: Exception) -> pa.Table:
        # Valid JSON whose values do not fit the catalogue's types: let Arrow infer them, so the
        # run goes on and dlt records the new type. Invalid JSON is a broken (truncated) body.
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BrokenBody(str(exc)[:200]) from None
        return pa.Table.from_pylist([doc])

    def _records(doc: pa.Table) -> pa.Array | None:
        if path[0] not in doc.column_names:
            return None
        records = doc.column(path[0]).combine_chunks()
        for part in path[1:]:
            if not pa.types.is_struct(records.type) or records.type.get_field_index(part) < 0:
                return None
            records = records.field(part)
        return records

    def decode(body: bytes) -> Page:
        doc = read(body)
        if whole_body:
            table = doc
            totals = PageTotals()
        else:
            records = _records(doc)
            if records is None:
                raise BrokenBody(f"no {records_path!r} in the response")
            if pa.types.is_null(records.type) or records.null_count:
                table = pa.table({})
            else:
                table = pa.Table.from_struct_array(records.flatten())
            totals = op.paging.totals(_envelope(doc, path)) if op.is_paged else PageTotals()
        table = _flatten(table, op) if table.num_columns else table
        return Page(table, table.num_rows, totals)

    return decode


_HEX = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype=np.uint8).reshape(256, 2)
_ROW_ID_BYTES = 10  # as many random bits as dlt's own _dlt_id


def row_ids(n: int) -> pa.Array:
    """Random unique `_dlt_id`s for n rows, vectorised.

    dlt can add them to Arrow tables itself (parquet_normalizer.add_dlt_id), but it makes one
    Python string per row and rewrites every parquet file to do it: a third of the run's time.
    """
    raw = np.frombuffer(os.urandom(n * _ROW_ID_BYTES), dtype=np.uint8)
    chars = _HEX[raw]
    width = 2 * _ROW_ID_BYTES
    offsets = np.arange(0, width * n + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars)])


# ----------------------------------------------------------------------------- dict path


def dict_decoder(op: Operation) -> Callable[[bytes], Page]:
    """Decoder of one body into dicts; dlt turns their lists into child tables."""
    records_path = op.records_path
    contract = contract_names(op)

    def decode(body: bytes) -> Page:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BrokenBody(str(exc)[:200]) from None
        totals = PageTotals()
        if records_path == WHOLE_BODY:
            records = doc if isinstance(doc, list) else [doc]
        else:
            records = dig(doc, records_path)
            if records is None and not (isinstance(doc, dict) and _has_path(doc, records_path)):
                raise BrokenBody(f"no {records_path!r} in the response")
            records = records or []
            if op.is_paged:
                totals = op.paging.totals(doc)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BrokenBody("records are not JSON objects")
        if contract:
            records = [{contract.get(k, k): v for k, v in r.items()} for r in records]
        return Page(records, len(records), totals)

    return decode


def _has_path(doc: dict[str, Any], dotted: str) -> bool:
    *parents, last = dotted.split(".")
    node = dig(doc, ".".join(parents)) if parents else doc
    return isinstance(node, dict) and last in node


def decoder(op: Operation) -> Callable[[bytes], Page]:
    return dict_decoder(op) if has_nested_lists(op) else arrow_decoder(op)
