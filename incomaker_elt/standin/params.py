"""Query and path parameters: parsed and checked against the catalogue, or a 400 naming them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any

from incomaker_elt.contract.catalogue import Catalogue, Operation
from incomaker_elt.standin.dialect import integer_id
from incomaker_elt.standin.errors import bad_parameter
from incomaker_elt.standin.generation.audience import LANGUAGES
from incomaker_elt.standin.money import COUNTRIES, CURRENCIES

TIMEFRAMES = ("day", "week", "month", "quarter", "year")
_ALLOWED = {"country": COUNTRIES, "currency": CURRENCIES, "language": LANGUAGES}
_INTEGER_LISTS = {"campaignId", "deliveryId", "dialogId", "ids"}
_SCORE_LISTS = {"r", "f", "m"}
_CELL = re.compile(r"^[1-5]{3}$")


def _date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_parameter(
            name, f"{name} must be an ISO date (YYYY-MM-DD), got {value!r}"
        ) from None


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_parameter(name, f"{name} must be an integer, got {value!r}") from None


def _id(name: str, value: str) -> int:
    """An id given as a number, or as the UUID this stand-in shows for it."""
    number = integer_id(name, value)
    return number if number is not None else _integer(name, value)


def _list(name: str, value: str) -> tuple[Any, ...]:
    items = [v.strip() for v in value.split(",")]
    if not items or any(not v for v in items):
        raise bad_parameter(name, f"{name} must be a comma-separated list without empty items")
    if name in _ALLOWED:
        allowed = _ALLOWED[name]
        normalised = [v.upper() if name != "language" else v.lower() for v in items]
        unknown = [v for v in normalised if v not in allowed]
        if unknown:
            raise bad_parameter(
                name, f"unknown {name} {', '.join(unknown)}; known: {', '.join(allowed)}"
            )
        return tuple(dict.fromkeys(normalised))
    if name in _INTEGER_LISTS or name in _SCORE_LISTS:
        numbers = [_id(name, v) for v in items]
        if name in _SCORE_LISTS and any(not 1 <= n <= 5 for n in numbers):
            raise bad_parameter(name, f"{name} scores must be between 1 and 5")
        if name in _INTEGER_LISTS and any(n < 1 for n in numbers):
            raise bad_parameter(name, f"{name} ids must be positive integers")
        return tuple(dict.fromkeys(numbers))
    return tuple(dict.fromkeys(items))


def parse_query(
    op: Operation, catalogue: Catalogue, pairs: Iterable[tuple[str, str]]
) -> tuple[dict[str, Any], int, int]:
    """The operation's parameters (typed), the index of the first record asked for and the page
    size, read as the operation's paging dialect names them. Unknown parameters are ignored, as
    Spring does; repeated list parameters are joined as if comma-separated."""
    raw: dict[str, str] = {}
    for key, value in pairs:
        if key in raw and catalogue.parameter_types.get(key) == "list":
            raw[key] = f"{raw[key]},{value}"
        else:
            raw[key] = value
    params: dict[str, Any] = {}
    # A per-id operation fed through a query parameter (contacts details: ?ids=1,2) takes it
    # even where the entry does not list it among its params.
    names = list(op.params)
    if op.parent and op.parent.into not in op.path_params and op.parent.into not in names:
        names.append(op.parent.into)
    for name in names:
        if name not in raw or raw[name] == "":
            continue
        kind = catalogue.parameter_types.get(name, "string")
        value = raw[name]
        if kind == "date":
            params[name] = _date(name, value)
        elif kind == "list":
            params[name] = _list(name, value)
        elif kind == "integer":
            params[name] = _integer(name, value)
        elif name == "timeframe":
            if value not in TIMEFRAMES:
                raise bad_parameter(
                    name, f"unknown timeframe {value!r}; use one of {', '.join(TIMEFRAMES)}"
                )
            params[name] = value
        else:
            params[name] = value
    if "dateFrom" in params and "dateTo" in params and params["dateFrom"] > params["dateTo"]:
        raise bad_parameter(
            "dateFrom",
            f"dateFrom {params['dateFrom']} is after dateTo {params['dateTo']}",
        )
    start, size = 0, catalogue.page_size
    paging = op.paging
    if paging.is_paged:
        size_name = paging.size_param
        size = _integer(size_name, raw[size_name]) if raw.get(size_name) else 20
        if not 1 <= size <= catalogue.max_page_size:
            raise bad_parameter(
                size_name,
                f"{size_name} must be between 1 and {catalogue.max_page_size}, got {size}",
            )
        # the offset of the first record asked for, or the number of its page
        offset = paging.style == "offset"
        name, first = (paging.offset_param, 0) if offset else (paging.page_param, paging.first_page)
        position = _integer(name, raw[name]) if raw.get(name) else first
        if position < first:
            raise bad_parameter(name, f"{name} must be {first} or more, got {position}")
        start = position if offset else (position - first) * size
    return params, start, size


def parse_path_value(name: str, value: str) -> int | str:
    """A path placeholder's value: a cell code like 345, or a positive integer id."""
    if name == "cell":
        if not _CELL.match(value):
            raise bad_parameter(name, f"cell must be three scores 1-5 such as 345, got {value!r}")
        return value
    number = integer_id(name, value)
    if number is not None:
        return number
    if not value.isdigit():
        raise bad_parameter(name, f"{name} must be a positive integer or its UUID, got {value!r}")
    return int(value)
