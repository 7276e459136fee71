"""What a handler gets: the world, today, the parsed parameters, and SQL-building helpers.

A per-id operation's handler runs in one of two modes. For one id (`path` holds it) it answers
that id's records. For a block of ids (`block` set, `path` empty) it answers the records of every
id in the block in one query, each record carrying its id, so that the service can index them
and answer each id without a query of its own (incomaker_elt/standin/perid.py). Handlers write the
id condition
with `is_id` and the existence check with `require_id`, which serve both modes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa

from incomaker_elt.contract.catalogue import Operation
from incomaker_elt.standin.errors import not_found
from incomaker_elt.standin.world import World


@dataclass(frozen=True)
class Block:
    """Ids lo..hi (inclusive) of a per-id operation's parent; None for both: every id."""

    lo: Any = None
    hi: Any = None

    def holds(self, value: Any) -> bool:
        return self.lo is None or self.lo <= value <= self.hi


@dataclass(frozen=True)
class Sql:
    text: str
    params: dict[str, Any]


@dataclass
class Ask:
    world: World
    op: Operation
    today: date
    params: dict[str, Any]
    path: dict[str, Any]
    block: Block | None = None
    bound: dict[str, Any] = field(default_factory=dict)
    # Block mode: the query listing the ids that exist (others are 404) and the 404's message.
    known_ids: str | None = None
    missing: str = ""

    # -- binding values into SQL: only what a query uses is bound, as DuckDB requires
    def bind(self, name: str, value: Any) -> str:
        self.bound[name] = value
        return f"${name}"

    @property
    def cutoff(self) -> str:
        """End of today: the API shows what happened before this instant."""
        return self.bind(
            "cutoff", datetime.combine(self.today + timedelta(days=1), datetime.min.time())
        )

    def is_id(self, column: str, name: str) -> str:
        """The condition that `column` is the asked id, one of the ids of a comma-list parameter
        (ids=1,2), or in block mode one of the block's."""
        if self.block is None and name in self.path:
            return f"{column} = {self.bind(f'path_{name}', self.path[name])}"
        if self.block is None:
            return f"list_contains({self.bind(name, list(self.params[name]))}, {column})"
        if self.block.lo is None:
            return "true"
        return (
            f"{column} BETWEEN {self.bind('block_lo', self.block.lo)} "
            f"AND {self.bind('block_hi', self.block.hi)}"
        )

    def require_id(
        self, name: str, ids_sql: str, column: str, what: str, missing: str | None = None
    ) -> None:
        """404 unless `ids_sql` lists the asked id in `column`. The message is "<what> <id> not
        found (as of <today>)", or `missing` with {id} replaced. In block mode the check is
        left to the service, which lists the block's ids with the same query."""
        if missing is None:
            missing = f"{what} {{id}} not found (as of {self.today.isoformat()})"
        if self.block is not None:
            self.known_ids = f"SELECT DISTINCT {column} FROM ({ids_sql}) WHERE " + self.is_id(
                column, name
            )
            self.missing = missing
            return
        if not self.rows(f"SELECT 1 FROM ({ids_sql}) WHERE {self.is_id(column, name)} LIMIT 1"):
            raise not_found(missing.replace("{id}", str(self.path[name])))

    def require_created(
        self, name: str, table: str, column: str, what: str, since: str = "created_at"
    ) -> None:
        """`require_id` of the ids in `column` of the rows of `table` there by today."""
        ids_sql = f"SELECT {column} FROM {table} WHERE {since} < {self.cutoff}"
        self.require_id(name, ids_sql, column, what)

    def window(self, date_expr: str) -> str:
        """`AND` clauses for dateFrom/dateTo (inclusive) on a date expression, when given."""
        clauses = ""
        if "dateFrom" in self.params:
            clauses += f" AND {date_expr} >= {self.bind('date_from', self.params['dateFrom'])}"
        if "dateTo" in self.params:
            clauses += f" AND {date_expr} <= {self.bind('date_to', self.params['dateTo'])}"
        return clauses

    def among(self, param: str, column: str) -> str:
        """`AND` clause keeping rows whose column is in the comma-list parameter, when given."""
        values = self.params.get(param)
        if not values:
            return ""
        return f" AND list_contains({self.bind('in_' + param, list(values))}, {column})"

    def sql(self, text: str) -> Sql:
        return Sql(text, dict(self.bound))

    # -- running helper queries inside a handler
    def rows(self, text: str) -> list[tuple]:
        return self.world.rows(text, dict(self.bound))

    def arrow(self, text: str) -> pa.Table:
        return self.world.arrow(text, dict(self.bound))

    def nest(
        self, records: list[dict[str, Any]], key: str, field: str, text: str
    ) -> list[dict[str, Any]]:
        """The records, each with the list `field` of the rows of the query `text` that share
        its `key` (a column the rows then drop), in the query's order."""
        rows: dict[Any, list[dict[str, Any]]] = {}
        for row in self.arrow(text).to_pylist():
            rows.setdefault(row.pop(key), []).append(row)
        for record in records:
            record[field] = rows.get(record[key], [])
        return records
