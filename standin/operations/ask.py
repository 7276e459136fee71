"""What a handler gets: the world, today, the parsed parameters, and SQL-building helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa

from ingestion.catalogue import Operation
from standin.errors import not_found
from standin.world import World


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
    bound: dict[str, Any] = field(default_factory=dict)

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

    @property
    def today_sql(self) -> str:
        return self.bind("today", self.today)

    def id(self, name: str) -> str:
        return self.bind(f"path_{name}", self.path[name])

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

    def require(self, exists_sql: str, what: str) -> None:
        """404 unless the query finds a row, e.g. a campaign sent by today."""
        if not self.rows(exists_sql):
            raise not_found(f"{what} not found (as of {self.today.isoformat()})")
