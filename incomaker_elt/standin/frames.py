"""Query results kept as ready-made JSON text, one object per record, served by the page.

A big list (a million orders) is queried, filtered, sorted and written as JSON once, by DuckDB's
vectorised string functions, into one Arrow string array whose rows each end with a comma. A page
is then a slice of that array's byte buffer: no Python work per record, which is what makes
paging through millions of records fast. Decimal fields arrive from SQL as integer hundredths and
leave as numbers with two decimals (259.00).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from incomaker_elt.contract.catalogue import Operation
from incomaker_elt.standin.dialect import shows_as_uuid, sql_timestamp, sql_uuid
from incomaker_elt.standin.faults import DRIFT_FIELD

if TYPE_CHECKING:
    from incomaker_elt.standin.world import World

DRIFT_VALUES = ("bronze", "silver", "gold")
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_INTEGER_TYPE = re.compile(r"U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?$")  # DuckDB's integer types


def _json_value(column: str, kind: str, sql_type: str = "", zone: str = "UTC") -> str:
    """SQL giving the JSON text of one field's value (never NULL: JSON null instead)."""
    c = f'"{column}"'
    if shows_as_uuid(column, kind) and _INTEGER_TYPE.match(sql_type):
        return f"coalesce({sql_uuid(column, column)}, 'null')"
    if kind == "integer":
        return f"coalesce(CAST({c} AS VARCHAR), 'null')"
    if kind == "decimal":
        return (
            f"CASE WHEN {c} IS NULL THEN 'null' ELSE "
            f"CASE WHEN {c} < 0 THEN '-' ELSE '' END || CAST(abs({c}) // 100 AS VARCHAR) || '.' "
            f"|| lpad(CAST(abs({c}) % 100 AS VARCHAR), 2, '0') END"
        )
    if kind == "boolean":
        return f"CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' ELSE 'null' END"
    if kind == "timestamp":
        return sql_timestamp(column, zone)
    if kind == "date":
        return f"""coalesce('"' || CAST(CAST({c} AS DATE) AS VARCHAR) || '"', 'null')"""
    if kind == "string":
        return f"coalesce(CAST(to_json(CAST({c} AS VARCHAR)) AS VARCHAR), 'null')"
    raise TypeError(f"field {column!r} of type {kind} cannot come from a flat query")


def _check_columns(world: World, sql: str, params: dict[str, Any], op: Operation) -> dict[str, str]:
    columns = world.describe(sql, params)
    missing = [f for f in op.fields if f not in columns]
    extra = [c for c in columns if c not in op.fields]
    if missing or extra:
        raise TypeError(
            f"{op.name}: query columns differ from the catalogue: missing {missing}, "
            f"unexpected {extra}"
        )
    for field, kind in op.fields.items():
        if kind == "decimal" and not _INTEGER_TYPE.match(columns[field]):
            raise TypeError(
                f"{op.name}: decimal field {field!r} must come from SQL as an integer "
                f"number of hundredths, not {columns[field]}"
            )
    return columns


def _json_object(op: Operation, columns: dict[str, str], zone: str) -> str:
    """SQL giving a record's JSON object text followed by a comma, fields in catalogue order."""
    parts = " || ',' || ".join(
        f"'{orjson.dumps(op.api_name(f)).decode()}:' || "
        f"{_json_value(f, kind, columns.get(f, ''), zone)}"
        for f, kind in op.fields.items()
    )
    return f"'{{' || {parts} || '}},'"


class Frame:
    """An operation's records in final order, each as JSON text followed by a comma."""

    def __init__(self, offsets: np.ndarray, data: memoryview) -> None:
        self.length = len(offsets) - 1
        self._offsets = offsets
        self._data = data
        self.nbytes = int(offsets[-1] - offsets[0]) if self.length else 0

    @classmethod
    def from_rows(cls, rows: list[bytes]) -> Frame:
        """A frame of records already rendered as JSON objects (each without the comma)."""
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) + 1 for r in rows], out=offsets[1:])
        return cls(offsets, memoryview(b"".join(r + b"," for r in rows)))

    @classmethod
    def from_query(
        cls,
        world: World,
        sql: str,
        params: dict[str, Any],
        op: Operation,
        zone: str,
        key: str | None = None,
    ) -> tuple[Frame, np.ndarray | None]:
        """The records of a handler's query ordered by the primary key; for a query over many
        parent ids, ordered by the field `key` first (so each key's records are a run, in the
        order a query for that key alone gives), with each row's key."""
        columns = _check_columns(world, sql, params, op)
        keys = (key,) if key else ()
        order = ", ".join(f'"{k}"' for k in (*keys, *op.primary_key))
        select = "".join(f'"{k}" AS key, ' for k in keys)
        query = f"SELECT {select}{_json_object(op, columns, zone)} AS json FROM ({sql}) AS records"
        table = world.arrow(query + (f" ORDER BY {order}" if order else ""), params)
        text = table.column("json").combine_chunks()
        text = text.cast(pa.large_string()) if text.type != pa.large_string() else text
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)
        data = text.buffers()[2]
        frame = cls(
            offsets[text.offset : text.offset + len(text) + 1],
            memoryview(data) if data is not None else memoryview(b""),
        )
        return frame, table.column("key").to_numpy() if key else None

    def __len__(self) -> int:
        return self.length

    def json_bytes(
        self, start: int, stop: int, drift: bool = False, position: int | None = None
    ) -> bytes:
        """Rows [start, stop) as JSON objects separated by commas; with drift, the row at
        `start` is the response's record number `position` (default `start`), which picks its
        drift value."""
        stop = min(stop, self.length)
        if start >= stop:
            return b""
        offsets, data = self._offsets, self._data
        if not drift:
            return bytes(data[offsets[start] : offsets[stop] - 1])
        # Schema drift is a fault mode, rarely asked for: plain Python is fast enough here.
        first = start if position is None else position
        rows = []
        for i in range(start, stop):
            record = bytes(data[offsets[i] : offsets[i + 1] - 2])  # without "}," at the end
            tier = DRIFT_VALUES[(first + i - start) % len(DRIFT_VALUES)]
            rows.append(record + f',"{DRIFT_FIELD}":"{tier}"}}'.encode())
        return b",".join(rows)
