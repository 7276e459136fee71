"""Handlers of the API operations, one module per documentation group.

A handler is registered under the catalogue name of its operation and receives an `Ask` (the
world, today, the parsed parameters). It answers with `Sql` (a flat query whose columns are exactly
the catalogue fields; decimal fields as integer hundredths), or with Python records for shapes
SQL does not flatten (nested lists, the conversions totals object). Routing, paging, sorting by
the primary key and JSON are the caller's job, driven by the catalogue.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from incomaker_elt.standin.operations.ask import Ask, Sql

Result = Sql | list[dict[str, Any]]
Handler = Callable[[Ask], Result]
HANDLERS: dict[str, Handler] = {}


def handles(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        if name in HANDLERS:
            raise RuntimeError(f"two handlers for operation {name!r}")
        HANDLERS[name] = handler
        return handler

    return register


def all_handlers() -> dict[str, Handler]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return HANDLERS
