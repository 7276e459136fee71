"""What a raw asset tells about its table: columns described from the catalogue, rows per day.

The catalogue entry of an operation knows every field: its name in the API, its type, whether it
is part of the key, the window the API filters on, the parent it is fetched for. The raw table's
columns are those fields as the ingestion names them
(`incomaker_elt.ingestion.raw_columns.column_hints` for the
table, `nested_hints` for the child tables dlt makes of list fields), so the column schema is built
from the same helpers and cannot drift from what the load writes.

A run over several daily partitions loads them in one go; each day's materialisation carries that
day's own row count, counted with one GROUP BY per table over the day column (the window field, or
for a per-id operation its parent's window field when it has it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import dagster as dg
from dagster._core.execution.context.metadata_logging import (
    AssetMetadataHandle,
    OutputMetadataAccumulator,
)

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.contract.columns import snake
from incomaker_elt.ingestion.raw_columns import (
    DLT_ID,
    PARAMS,
    SNAPSHOT_DATE,
    column_hints,
    has_nested_lists,
    nested_hints,
    primary_key,
)
from incomaker_elt.ingestion.values import RAW_SUFFIX

_DLT_COLUMNS = {
    "_dlt_load_id": "dlt load that last wrote the row (`_dlt_loads.load_id`)",
    DLT_ID: "dlt's id of the row",
    "_dlt_parent_id": "`_dlt_id` of the row in the parent table this element belongs to",
    "_dlt_list_idx": "position of the element in its list in the API's record (from 0)",
    "_dlt_root_id": "`_dlt_id` of the row in the operation's table this element belongs to",
    SNAPSHOT_DATE: "day the aggregate was asked for (the run's last day): one snapshot per day",
    PARAMS: "query parameters that produced the snapshot (JSON, keys sorted)",
}
_LATEST_SNAPSHOT_DATE = (
    "day the aggregate was asked for (the run's last day): only the latest snapshot is kept "
    "(catalogue `history: latest`)"
)
_HINT_TYPE_NAMES = {"bool": "boolean"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    nullable: bool = True


# ------------------------------------------------------------------------- the column schema


def _type_name(hint: Mapping[str, Any]) -> str:
    kind = hint.get("data_type", "")
    if kind == "decimal":
        return f"decimal({hint.get('precision', 38)},{hint.get('scale', 9)})"
    if kind == "timestamp":
        return "timestamp with time zone" if hint.get("timezone", True) else "timestamp"
    return _HINT_TYPE_NAMES.get(kind, kind or "unknown")


def _field_roles(op: Operation, catalogue: Catalogue | None) -> dict[str, list[str]]:
    """What a top-level field is for, beyond its value: key, window, parent link."""
    roles: dict[str, list[str]] = {}
    key_role = (
        "part of the key of a record within the snapshot (each run replaces the table)"
        if op.keeps_latest_only
        else "part of the primary key dlt merges on"
    )
    for key in op.primary_key:
        roles.setdefault(key, []).append(key_role)
    if op.window:
        roles.setdefault(op.window, []).append(
            "the field dateFrom/dateTo filter on (the partition's day)"
            if op.kind == "event"
            else "the field dateFrom/dateTo filter on"
        )
    if op.parent:
        roles.setdefault(op.parent.field, []).append(
            f"fetched for each `{op.parent.field}` of `{op.parent.resource}` "
            f"(into `{op.parent.into}`)"
        )
        day = day_field(op, catalogue) if catalogue else None
        if day and day != op.window:
            roles.setdefault(day, []).append("the partition's day (its parent's window field)")
    return roles


def _scalar_descriptions(
    fields: Mapping[str, str],
    nested: Mapping[str, Mapping[str, str]],
    api_name: Any,
    roles: Mapping[str, list[str]],
    prefix: str = "",
    api_prefix: str = "",
) -> dict[str, str]:
    """Column name -> description for the scalar fields of a record (objects flattened)."""
    out: dict[str, str] = {}
    for field, kind in fields.items():
        path = f"{api_prefix}{api_name(field)}"
        if kind == "object":
            sub_fields = nested.get(field, {})
            out.update(
                _scalar_descriptions(
                    sub_fields, {}, lambda f: f, {}, f"{prefix}{snake(field)}__", f"{path}."
                )
            )
        elif kind != "list":
            column = prefix + snake(field)
            described = f"`{path}` in the API's record ({kind})"
            out[column] = "; ".join([described, *roles.get(field, [])])
            out[column + RAW_SUFFIX] = (
                f"exact text of `{path}` where the value did not fit {kind} "
                f"(`{column}` is then NULL)"
            )
    return out


def catalogue_columns(op: Operation, catalogue: Catalogue | None = None) -> dict[str, list[Column]]:
    """The operation's tables as dlt names them (its own, then its child tables), with columns.

    Only what the load always writes: a `<column>__raw` column appears when a value did not fit
    its type, and `column_schema` adds it from the warehouse then.
    """
    roles = _field_roles(op, catalogue)
    described = _scalar_descriptions(op.fields, op.nested, op.api_name, roles)
    root: list[Column] = []
    for name, hint in column_hints(op).items():
        description = described.get(name) or _DLT_COLUMNS.get(name, "")
        if name == SNAPSHOT_DATE and op.keeps_latest_only:
            description = _LATEST_SNAPSHOT_DATE
        root.append(Column(name, _type_name(hint), description, hint.get("nullable", True)))
    dlt_columns = ["_dlt_load_id"] + ([DLT_ID] if has_nested_lists(op) else [])
    for name in dlt_columns:
        root.append(Column(name, "text", _DLT_COLUMNS[name], nullable=False))
    tables = {op.name: root}
    for (path,), hints in nested_hints(op).items():
        dotted = _dotted_list_path(op, path)
        first, *rest = dotted.split(".")
        api_path = ".".join([op.api_name(first), *rest])
        child_described = _scalar_descriptions(
            op.nested.get(dotted, {}), {}, lambda f: f, {}, api_prefix=f"{api_path}[]."
        )
        columns = [
            Column(name, _type_name(hint), child_described.get(name, ""), True)
            for name, hint in hints["columns"].items()
        ]
        columns += [
            Column(name, "bigint" if name == "_dlt_list_idx" else "text", _DLT_COLUMNS[name], False)
            for name in ("_dlt_root_id", "_dlt_parent_id", "_dlt_list_idx", DLT_ID)
        ]
        tables[f"{op.name}__{path}"] = columns
    return tables


def _dotted_list_path(op: Operation, snake_path: str) -> str:
    """The catalogue's dotted path of the list field whose child table is `<op>__<snake_path>`."""
    for dotted in op.nested:
        if "__".join(snake(part) for part in dotted.split(".")) == snake_path:
            return dotted
    return snake_path


def column_schema(
    op: Operation,
    catalogue: Catalogue | None = None,
    warehouse: Mapping[str, list[tuple[str, str, bool]]] | None = None,
) -> dg.TableSchema:
    """`dagster/column_schema` of the raw asset: its table's columns, then its child tables'.

    Child table columns are named `<child table>.<column>`. With `warehouse` (table -> columns as
    the warehouse holds them), the columns and types are the warehouse's and the descriptions the
    catalogue's; without it, both come from the catalogue (the asset definition).
    """
    columns: list[dg.TableColumn] = []
    for table, expected in catalogue_columns(op, catalogue).items():
        prefix = "" if table == op.name else f"{table}."
        descriptions = {c.name: c.description for c in expected}
        raw_descriptions = {
            c.name + RAW_SUFFIX: f"exact text where the value did not fit (`{c.name}` is NULL)"
            for c in expected
        }
        if warehouse and warehouse.get(table):
            rows = [
                Column(
                    name,
                    kind.lower(),
                    descriptions.get(name) or raw_descriptions.get(name, ""),
                    nullable,
                )
                for name, kind, nullable in warehouse[table]
            ]
        else:
            rows = expected
        columns += [
            dg.TableColumn(
                name=prefix + c.name,
                type=c.type,
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in rows
        ]
    return dg.TableSchema(columns=columns)


def asset_description(op: Operation) -> str:
    """What the raw asset holds and how it is fetched, for the asset's page in the UI."""
    paging = op.paging
    if not op.is_paged:
        how = "One request answers it all (no paging)"
    elif paging.style == "page":
        how = f"Paged by `{paging.page_param}` (from {paging.first_page}) and `{paging.size_param}`"
    else:
        how = f"Paged by `{paging.offset_param}` and `{paging.size_param}`"
    lines = [
        f"Raw `{op.name}`: {op.title}, `{op.method} {op.path}` ({op.kind}; catalogue status "
        f"{op.status}). {how}; records at `{op.records_path}`.",
    ]
    if op.window:
        lines.append(f"Filtered by `dateFrom`/`dateTo` on `{op.api_name(op.window)}`.")
    if op.parent:
        lines.append(
            f"Fetched for each `{op.parent.field}` of `{op.parent.resource}`"
            + (" that is new or changed" if op.parent.changed_only else "")
            + "."
        )
    key = ", ".join(primary_key(op))
    lines.append(f"Merged by dlt on ({key})." if key else "Appended by dlt.")
    children = [table for table in catalogue_columns(op) if table != op.name]
    if children:
        lines.append(f"Child tables: {', '.join(f'`{c}`' for c in children)}.")
    return " ".join(lines)


# ----------------------------------------------------------------------------- rows per day


def day_field(op: Operation, catalogue: Catalogue) -> str | None:
    """The field that says which day (partition) a record belongs to, if the record has one.

    An event's window field; for a per-id operation, its parent's window field when the record
    carries it too (an order's detail has the order's `createdAt`).
    """
    if op.window:
        return op.window
    seen: set[str] = set()
    current = op
    while current.parent and current.parent.resource not in seen:
        seen.add(current.parent.resource)
        parent = catalogue.get(current.parent.resource)
        if parent.window and op.fields.get(parent.window) in ("date", "timestamp"):
            return parent.window
        current = parent
    return None


def rows_per_day_query(table: str, column: str, kind: str) -> str:
    """One GROUP BY over the run's days; `%s` placeholders for the first and the day after last.

    Timestamps are taken as UTC days, as the API's window filters them.
    """
    day = f'"{column}"' if kind == "date" else f"cast(timezone('UTC', \"{column}\") as date)"
    return f"select {day} as day, count(*) from {table} where {day} >= %s and {day} < %s group by 1"


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def add_partition_metadata(
    context: dg.AssetExecutionContext,
    metadata: Mapping[tuple[dg.AssetKey, str], Mapping[str, Any]],
) -> None:
    """`context.add_asset_metadata(..., partition_key=...)` for many partitions in one step.

    Dagster's accumulator copies everything added so far on each call: the ~7,700 calls of a first
    load (14 tables x ~550 days) took ~9 s. This merges them into the same accumulator at once;
    each partition's materialisation event then carries its own values.
    """
    step = context.op_execution_context._step_execution_context  # noqa: SLF001
    merged = dict(step._metadata_accumulator.per_output_metadata)  # noqa: SLF001
    for (asset_key, partition), values in metadata.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=partition)
        merged[handle] = {**merged.get(handle, {}), **values}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)  # noqa: SLF001
