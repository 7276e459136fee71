"""From a catalogue entry to typed records: Arrow schemas and page decoders (the columns dlt is
told, names, types and keys, are in raw_columns.py).

Two ways a page becomes records, chosen per operation:
- flat operations (no `list` field, which is nearly all the volume) take the Arrow path: the page
  body goes straight into pyarrow's C++ JSON reader with the catalogue's types, and dlt loads the
  Arrow tables as parquet. No Python object per row is ever made.
- operations with nested lists (an order's items, a contact's segments) take the dict path: dicts
  with exact values (numbers parsed from their text, never through a binary float) that dlt's
  normaliser splits into child tables `<table>__<field>`.
Both give the same column names (dlt's snake_case) and the same types, taken from the catalogue.

A value the catalogue's type cannot hold as sent (incomaker_elt/ingestion/values.py) does not stop
the run: a
flat page whose body the Arrow reader refuses is decoded again by the careful path, in Python,
value by value; there, and on the dict path, a value that fits exactly is converted and one that
does not leaves its typed column NULL with its exact text in `<column>__raw`. Each page says what
it did (`Page.notes`), and the run's summary lists it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from incomaker_elt.contract.catalogue import Operation
from incomaker_elt.contract.columns import snake
from incomaker_elt.contract.paging import WHOLE_BODY, PageTotals, dig
from incomaker_elt.ingestion.errors import BrokenBody, IngestionError
from incomaker_elt.ingestion.raw_columns import (
    PARAMS,
    SNAPSHOT_DATE,
    has_nested_lists,
)
from incomaker_elt.ingestion.values import (
    CONVERTED,
    FITTERS,
    KEPT,
    RAW_SUFFIX,
    PageNotes,
    ValueNote,
    exact,
    json_text,
    loads_exact,
    plain,
    raw_text,
)

DECIMAL = pa.decimal128(38, 9)
"""dlt's default DuckDB decimal: money stays exact, scores and shares keep nine places."""


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
    notes: tuple[ValueNote, ...] = ()
    """Values that came in a form other than their field's type, and what was done with them."""
    pages: int = 1
    """The responses it holds: several pages of a listing read together (ArrowDecoder.together)."""


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


def _body_schema(op: Operation) -> pa.Schema:
    """The Arrow schema of a whole response body: the records at their path, typed."""
    record_type = pa.struct(_struct_fields(op.fields, op.nested, op.api_names))
    if op.records_path == WHOLE_BODY:
        return pa.schema(list(record_type))
    return _records_schema(op.records_path.split("."), pa.list_(record_type))


def _parse_options(op: Operation, newlines_in_values: bool = False) -> pa_json.ParseOptions:
    # Fields the catalogue does not know (schema drift) are kept with inferred types.
    return pa_json.ParseOptions(
        explicit_schema=_body_schema(op),
        unexpected_field_behavior="infer",
        newlines_in_values=newlines_in_values,
    )


def _stripped(body: bytes) -> bytes:
    """The body without surrounding whitespace; the body itself (no copy of a page's ~100 kB)
    when it has none, as nearly every body has not."""
    if body[:1].isspace() or body[-1:].isspace():
        return body.strip()
    return body


class Decoder:
    """A page decoder that crosses to another process as its recipe: how it was made, and for
    which operation (incomaker_elt/ingestion/client_process.py decodes pages beside dlt)."""

    def __init__(self, make: Callable[[Operation], Callable[[bytes], Page]], op: Operation) -> None:
        self.make = make
        self.op = op
        self._decode = make(op)

    def __call__(self, body: bytes) -> Page:
        return self._decode(body)

    def together(self, bodies: list[bytes]) -> Page | None:
        """Several bodies of one listing as one page; None: decode each alone."""
        return None

    def __reduce__(self) -> tuple[Any, ...]:
        return (Decoder, (self.make, self.op))


def arrow_decoder(op: Operation) -> ArrowDecoder:
    """Decoder of one response body into an Arrow table with the contract's columns."""
    return ArrowDecoder(op)


class ArrowDecoder:
    """Response bodies into Arrow tables with the contract's columns: one body (`__call__`), or
    several pages of one listing read together (`together`)."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.whole_body = op.records_path == WHOLE_BODY
        self.path = op.records_path.split(".")
        self.options = _parse_options(op)
        self.multiline = _parse_options(op, newlines_in_values=True)

    def __reduce__(self) -> tuple[Any, ...]:  # to another process as its operation
        return (ArrowDecoder, (self.op,))

    def _read(self, body: bytes) -> pa.Table | None:
        """The body as a one-row table; None when the reader refuses its values."""
        read_options = pa_json.ReadOptions(use_threads=False, block_size=max(len(body) + 1, 1024))
        # The reader takes one JSON document per line; a pretty-printed body needs the slower mode.
        parse = self.multiline if b"\n" in body else self.options
        try:
            table = pa_json.read_json(io.BytesIO(body), read_options, parse)
        except pa.ArrowInvalid:
            return None
        if table.num_rows != 1:
            raise BrokenBody(f"expected one JSON object, got {table.num_rows}")
        return table

    def _records(self, doc: pa.Table) -> pa.Array | None:
        path = self.path
        if path[0] not in doc.column_names:
            return None
        records = doc.column(path[0]).combine_chunks()
        for part in path[1:]:
            if not pa.types.is_struct(records.type) or records.type.get_field_index(part) < 0:
                return None
            records = records.field(part)
        return records

    def __call__(self, body: bytes) -> Page:
        op = self.op
        stripped = _stripped(body)
        if not stripped.startswith(b"{"):
            raise BrokenBody(f"expected a JSON object, got {stripped[:40]!r}")
        doc = self._read(stripped)
        if doc is None:
            # Valid JSON whose values do not all fit the catalogue's types (or not JSON at all,
            # which the careful path reports as a broken body).
            return careful_page(op, stripped)
        if self.whole_body:
            table = doc
            totals = PageTotals()
        else:
            records = self._records(doc)
            if records is None:
                raise missing_records(op, stripped)
            if pa.types.is_null(records.type) or records.null_count:
                # The reader makes a null column of a key the body does not have at all.
                if not _has_path(orjson.loads(stripped), op.records_path):
                    raise missing_records(op, stripped)
                table = pa.table({})
            else:
                table = pa.Table.from_struct_array(records.flatten())
            totals = op.paging.totals(_envelope(doc, self.path)) if op.is_paged else PageTotals()
        if table.num_columns:
            try:
                table = _flatten(table, op)
            except pa.ArrowInvalid:  # a date the Arrow cast refuses
                return careful_page(op, stripped)
        return Page(table, table.num_rows, totals)

    def together(self, bodies: list[bytes]) -> Page | None:
        """Pages of one listing (after its first) as one page: their records in one read.

        pyarrow's reader costs ~0.3 ms a call before it reads a byte: four 100 kB pages read as
        four JSON lines take a third less CPU than each alone. Their totals are not read (the
        first page's told how many there are). None, so that each is decoded alone as
        `__call__` does, for anything out of the ordinary: a body on several lines, values the
        reader refuses, a page without its records."""
        lines = [_stripped(body) for body in bodies]
        if self.whole_body or not all(
            line.startswith(b"{") and b"\n" not in line for line in lines
        ):
            return None
        joined = b"\n".join(lines)
        read_options = pa_json.ReadOptions(use_threads=False, block_size=len(joined) + 1)
        try:
            doc = pa_json.read_json(io.BytesIO(joined), read_options, self.options)
        except pa.ArrowInvalid:
            return None
        records = self._records(doc) if doc.num_rows == len(bodies) else None
        if records is None or pa.types.is_null(records.type) or records.null_count:
            return None
        table = pa.Table.from_struct_array(records.flatten())
        if table.num_columns:
            try:
                table = _flatten(table, self.op)
            except pa.ArrowInvalid:
                return None
        return Page(table, table.num_rows, pages=len(bodies))


class OneRecordBodies:
    """Decoding for an operation whose every answer is one flat record (a detail per id).

    One `read_json` per body costs ~360 us of setup for a record of ~250 bytes, and a one-row
    table each is ~10 KB held until its chunk is written: at `large`, 111,020 RFM contact details
    were 40 s of CPU and most of the run's peak memory. So the fetching thread only checks that a
    body is one JSON object on one line (`accept`: a broken body is still retried) and keeps its
    bytes; later, many of them are read together as JSON lines in one call (`decode`), with the
    same schema and the same flattening as `arrow_decoder`. When the reader refuses the batch (a
    value that does not fit its type), each body is decoded alone exactly as `arrow_decoder` does,
    so the careful path and its notes are the same as before.
    """

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.alone = arrow_decoder(op)
        self._options = _parse_options(op)

    def __reduce__(self) -> tuple[Any, ...]:  # to another process as its operation
        return (OneRecordBodies, (self.op,))

    def accept(self, body: bytes) -> bytes | Page:
        """The body, kept to be read with others; a body of another form decoded alone."""
        stripped = _stripped(body)
        if stripped.startswith(b"{") and b"\n" not in stripped:
            try:
                is_object = isinstance(orjson.loads(stripped), dict)
            except orjson.JSONDecodeError:
                is_object = False
            if is_object:
                return stripped
        return self.alone(body)

    def decode(self, bodies: list[bytes]) -> list[Page]:
        """Bodies kept by `accept`: one page of all their records, else a page per body."""
        if not bodies:
            return []
        lines = b"\n".join(bodies)
        read_options = pa_json.ReadOptions(use_threads=False, block_size=len(lines) + 1)
        try:
            table = pa_json.read_json(io.BytesIO(lines), read_options, self._options)
            if table.num_rows == len(bodies):
                table = _flatten(table, self.op)
                return [Page(table, table.num_rows)]
        except pa.ArrowInvalid:
            pass
        return [self.alone(body) for body in bodies]


def one_record_bodies(op: Operation) -> OneRecordBodies | None:
    """Batch decoding for the answers of a flat, unpaged whole-body operation; None for others.

    Aggregates are left out: their records are stamped with the query of each request."""
    if op.is_paged or op.records_path != WHOLE_BODY or has_nested_lists(op):
        return None
    return None if op.kind == "aggregate" else OneRecordBodies(op)


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


# ----------------------------------------------------------------------------- careful path


def _records_of(op: Operation, doc: Any) -> list[Any]:
    """The records of a decoded body, at the operation's records path."""
    records_path = op.records_path
    if records_path == WHOLE_BODY:
        records = doc if isinstance(doc, list) else [doc]
    else:
        records = dig(doc, records_path)
        if records is None and not _has_path(doc, records_path):
            raise missing_records(op, doc)
        records = records or []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BrokenBody("records are not JSON objects")
    return records


class _Fitter:
    """Fits the values of one page to the catalogue's types, noting what did not fit as sent."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.notes = PageNotes(op.name)
        self.keys = set(op.primary_key)

    def value(
        self, value: Any, kind: str, field: str, table: str, column: str, top: bool
    ) -> tuple[Any, str | None]:
        """(the typed value or None, the exact text to keep beside it or None)."""
        typed, outcome, why = FITTERS[kind](value)
        if outcome is None:
            return typed, None
        key = top and outcome == KEPT and field in self.keys
        self.notes.add(field, table, column, kind, outcome, why, value, key=key)
        if outcome == CONVERTED:
            return typed, None
        return typed, raw_text(value)

    def column(
        self, values: list[Any], kind: str, field: str, column: str, top: bool
    ) -> tuple[pa.Array, list[str | None] | None]:
        """A column typed, and the exact texts of the values that do not fit (or None).

        In one go when every value is already of the field's type (the usual case even on a
        page that came this way: one odd field does not slow down the others); value by value
        otherwise."""
        whole = _typed_at_once(values, kind)
        if whole is not None:
            return whole, None
        typed, raw = self._one_by_one(values, kind, field, column, top)
        return pa.array(typed, _ARROW_TYPES_EXACT[kind]), raw

    def _one_by_one(
        self, values: list[Any], kind: str, field: str, column: str, top: bool
    ) -> tuple[list[Any], list[str | None] | None]:
        typed: list[Any] = [None] * len(values)
        raw: list[str | None] | None = None
        table = self.op.name
        for i, value in enumerate(values):
            if value is None:
                continue
            typed[i], text = self.value(value, kind, field, table, column, top)
            if text is not None:
                if raw is None:
                    raw = [None] * len(values)
                raw[i] = text
        return typed, raw


_SENT_AS: dict[str, set[type]] = {
    kind: {type(None), *types}
    for kind, types in {
        "integer": (int,),
        "decimal": (Decimal, int),
        "string": (str,),
        "boolean": (bool,),
        "date": (str,),
        "timestamp": (str,),
    }.items()
}
"""The Python types a column's values come as when the API sends them as the field's type (the
type itself, not a subclass: True is not an integer)."""


def _typed_at_once(values: list[Any], kind: str) -> pa.Array | None:
    """The column in one Arrow conversion, or None when a value is not of the field's type or
    does not fit it (Arrow refuses to round a decimal, overflow an integer or drop nanoseconds)."""
    if not set(map(type, values)) <= _SENT_AS[kind]:
        return None
    try:
        if kind in ("date", "timestamp"):
            return pa.array(values, pa.string()).cast(_ARROW_TYPES_EXACT[kind])
        return pa.array(values, _ARROW_TYPES_EXACT[kind])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def _inferred(values: list[Any]) -> pa.Array:
    """A field the catalogue does not know, typed as Arrow infers it; mixed ones as JSON text."""
    try:
        return pa.array([plain(v) for v in values])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else raw_text(v) for v in values], pa.string())


def _extra_keys(rows: list[Any], known: set[str]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            for key in row:
                if key not in known:
                    seen[key] = None
    return list(seen)


def careful_page(op: Operation, body: bytes) -> Page:
    """A flat page decoded value by value: every value exact, those that do not fit kept as text.

    Taken only for pages the Arrow reader refuses, so the normal path stays as fast as it was.
    Gives the same columns and types as the Arrow path, plus `<column>__raw` where needed.
    """
    doc = loads_exact(body)
    records = _records_of(op, doc)
    totals = PageTotals()
    if op.records_path != WHOLE_BODY and op.is_paged:
        totals = op.paging.totals(doc)
    if not records:
        return Page(pa.table({}), 0, totals)
    fitter = _Fitter(op)
    arrays: list[pa.Array] = []
    names: list[str] = []
    raws: list[tuple[str, list[str | None]]] = []
    known: set[str] = set()
    for field, kind in op.fields.items():
        api = op.api_name(field)
        known.add(api)
        values = [r.get(api) for r in records]
        if kind in FITTERS:
            array, raw = fitter.column(values, kind, field, snake(field), top=True)
            arrays.append(array)
            names.append(api)
            if raw is not None:
                raws.append((snake(field) + RAW_SUFFIX, raw))
        elif kind == "object":
            arrays.append(_object_column(fitter, field, values, op.nested.get(field, {}), raws))
            names.append(api)
    for key in _extra_keys(records, known):
        arrays.append(_inferred([r.get(key) for r in records]))
        names.append(key)
    for name, raw in raws:
        arrays.append(pa.array(raw, pa.string()))
        names.append(name)
    table = _flatten(pa.Table.from_arrays(arrays, names=names), op)
    return Page(table, table.num_rows, totals, fitter.notes.notes())


def _object_column(
    fitter: _Fitter,
    field: str,
    values: list[Any],
    subfields: dict[str, str],
    raws: list[tuple[str, list[str | None]]],
) -> pa.Array:
    """An object field as a struct column (flattened to <field>__<sub> afterwards)."""
    prefix = snake(field) + "__"
    objects = [v if isinstance(v, dict) else None for v in values]
    children: list[pa.Array] = []
    child_names: list[str] = []
    for sub, kind in subfields.items():
        if kind not in FITTERS:
            continue
        sub_values = [o.get(sub) if o is not None else None for o in objects]
        array, raw = fitter.column(sub_values, kind, f"{field}.{sub}", prefix + snake(sub), False)
        children.append(array)
        child_names.append(sub)
        if raw is not None:
            raws.append((prefix + snake(sub) + RAW_SUFFIX, raw))
    for key in _extra_keys(objects, set(subfields)):
        children.append(_inferred([o.get(key) if o is not None else None for o in objects]))
        child_names.append(key)
    not_objects = [v for v in values if v is not None and not isinstance(v, dict)]
    if not_objects:
        raw: list[str | None] = [None] * len(values)
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, dict):
                fitter.notes.add(
                    field, fitter.op.name, snake(field), "object", KEPT, _kind_of(value), value
                )
                raw[i] = raw_text(value)
        raws.append((snake(field) + RAW_SUFFIX, raw))
    mask = pa.array([o is None for o in objects])
    if not children:
        return pa.array([None] * len(values), pa.struct([]))
    return pa.StructArray.from_arrays(children, names=child_names, mask=mask)


def _kind_of(value: Any) -> str:
    return f"{type(value).__name__} where an object was expected"


_ARROW_TYPES_EXACT = {**_ARROW_TYPES, "date": pa.date32()}
"""The careful path makes dates itself (the Arrow reader reads them as text)."""


# ----------------------------------------------------------------------------- dict path


class _ExactRecords:
    """Records of the dict path, every catalogue field fitted to its type, numbers exact."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.contract = contract_names(op)
        self.fitter = _Fitter(op)

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._fit(record, self.op.fields, "", self.op.name, "", top=True)

    def _fit(
        self,
        record: dict[str, Any],
        fields: dict[str, str],
        path: str,
        table: str,
        prefix: str,
        top: bool,
    ) -> dict[str, Any]:
        """One record (or nested object / list item): `path` is its dotted catalogue path,
        `table` the raw table its scalars land in, `prefix` their column prefix there."""
        out: dict[str, Any] = {}
        nested = self.op.nested
        for key, value in record.items():
            name = self.contract.get(key, key) if top else key
            kind = fields.get(name)
            dotted = f"{path}.{name}" if path else name
            column = prefix + snake(name)
            if kind is None or value is None:
                out[name] = exact(value)
            elif kind in FITTERS:
                out[name], text = self.fitter.value(value, kind, dotted, table, column, top)
                if text is not None:
                    out[name + RAW_SUFFIX] = text
            elif kind == "object" and isinstance(value, dict):
                sub = nested.get(dotted, {})
                out[name] = self._fit(value, sub, dotted, table, column + "__", top=False)
            elif kind == "list" and isinstance(value, list):
                sub = nested.get(dotted, {})
                child = f"{table}__{column}"
                out[name] = [
                    self._fit(item, sub, dotted, child, "", top=False)
                    if isinstance(item, dict)
                    else exact(item)
                    for item in value
                ]
            else:
                self.fitter.notes.add(dotted, table, column, kind, KEPT, _kind_of(value), value)
                out[name] = None
                out[name + RAW_SUFFIX] = json_text(value)
        return out


def dict_decoder(op: Operation) -> Decoder:
    """Decoder of one body into dicts; dlt turns their lists into child tables.

    Numbers are parsed from their text (never a binary float) and fitted to the catalogue's
    types: amounts stay exact whatever their number of digits. Low volume (details, totals), so
    Python's own JSON parser is fast enough here.
    """
    return Decoder(_dict_decode, op)


def _dict_decode(op: Operation) -> Callable[[bytes], Page]:
    def decode(body: bytes) -> Page:
        doc = loads_exact(body)
        records = _records_of(op, doc)
        totals = PageTotals()
        if op.records_path != WHOLE_BODY and op.is_paged:
            totals = op.paging.totals(doc)
        fitting = _ExactRecords(op)
        fitted = [fitting.record(r) for r in records]
        return Page(fitted, len(fitted), totals, fitting.fitter.notes.notes())

    return decode


class UnexpectedBody(IngestionError):
    """A whole answer in another shape than the catalogue describes: not worth another try."""


def missing_records(op: Operation, body: Any) -> UnexpectedBody:
    """The error for an answer without the records where the catalogue says they are."""
    if isinstance(body, bytes):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            body = None
    keys = ", ".join(sorted(body)) if isinstance(body, dict) else type(body).__name__
    return UnexpectedBody(
        f"operation {op.name!r}: the answer has no {op.records_path!r}, where the catalogue "
        f"says its records are (the answer's keys: {keys or 'none'}). The API pages or names "
        "its records otherwise: run `incomaker-elt probe`, which writes the override "
        "(`records:`, `paging:`) for INCOMAKER_CATALOGUE_OVERRIDES. Nothing of this operation "
        "was loaded."
    )


def _has_path(doc: Any, dotted: str) -> bool:
    if not isinstance(doc, dict):
        return False
    *parents, last = dotted.split(".")
    node = dig(doc, ".".join(parents)) if parents else doc
    return isinstance(node, dict) and last in node


def decoder(op: Operation) -> Decoder | ArrowDecoder:
    return dict_decoder(op) if has_nested_lists(op) else arrow_decoder(op)
