"""Values the catalogue's types cannot hold as sent: converted when exact, else kept as text.

The API may send legal JSON that does not fit a field's declared type: an integer as text ("42"),
a tenth decimal place, an integer beyond 64 bits, an amount beyond DECIMAL(38,9), nanoseconds, a
UUID where the catalogue says integer. None of these stops a run and none is changed silently:

- a value that the type holds exactly is converted ("42" -> 42, "12.50" -> 12.5, 42.0 -> 42);
- a value it cannot hold leaves the typed column NULL for that record, and the exact value the API
  sent goes into a text column beside it, `<column>__raw`: a JSON string's contents as sent, a
  number's every digit (written without an exponent: 1e-10 is 0.0000000001), an object's JSON;
- a timestamp finer than the column's microseconds is typed to the microsecond (so windows and
  cursors still work) and its exact text is kept in `<column>__raw`;
- an offset (+02:00) is the same instant in UTC: exact, nothing to keep.

Numbers are never binary floats on the way: bodies are parsed with every number exact (int, or
Decimal from its text) wherever values are fitted here.

Every such value is noted (`ValueNote`): operation, field, an example, and the catalogue override
that would type the field properly. The run summary and the Dagster materialisations show them.

A primary-key field is the exception: a record whose key does not fit cannot be merged (a NULL key
would collapse or duplicate records), so its operation fails with the override that fixes it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from incomaker_elt.ingestion.errors import BrokenBody, IngestionError

RAW_SUFFIX = "__raw"
"""The text column beside a typed one, holding the values it could not hold exactly."""
DECIMAL_PRECISION, DECIMAL_SCALE = 38, 9
INTEGER_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE
_INT64 = (-(2**63), 2**63 - 1)
_EXACT = Context(prec=DECIMAL_PRECISION + 20)
_NANO = Decimal(1).scaleb(-DECIMAL_SCALE)

# Outcomes of fitting a value to its field's type.
CONVERTED = "converted"
"""The type holds it exactly, but it came in another form (text, 42.0): converted."""
KEPT = "kept"
"""The type cannot hold it: the typed column is NULL, the exact text is in <column>__raw."""
MICROSECONDS = "microseconds"
"""A timestamp finer than microseconds: typed to the microsecond, the exact text beside it."""

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"-?(?:0|[1-9]\d*)")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_exact(body: bytes) -> Any:
    """The body as Python values with exact numbers: integers as int, others as Decimal (never a
    binary float)."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BrokenBody(str(exc)[:200]) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def number_text(value: int | Decimal) -> str:
    """A number's digits, written out (12.3456789012, 0.0000000001; an exponent expanded)."""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def json_text(value: Any) -> str:
    """The JSON text of a decoded value (numbers with all their digits)."""
    if _is_number(value):
        return number_text(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json_text(k)}:{json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    return json.dumps(value)


def raw_text(value: Any) -> str:
    """What <column>__raw holds: a string's contents, anything else's JSON text."""
    return value if isinstance(value, str) else json_text(value)


def plain(value: Any) -> Any:
    """A field the catalogue does not know, as Arrow's reader would infer it (numbers with a
    fraction as float, as the Arrow path does for unknown fields); too big integers as text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def exact(value: Any) -> Any:
    """A field the catalogue does not know, for the dict path: numbers exact (int, Decimal);
    those beyond BIGINT or DECIMAL(38,9) as their text."""
    if isinstance(value, Decimal):
        number, why = _decimal(value)
        return number_text(value) if why else number
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return value


# ----------------------------------------------------------------------------- fitting one value

Fitted = tuple[Any, str | None, str | None]
"""(typed value or None, outcome or None when sent as the type, why it did not fit)."""


def _decimal(value: str | int | Decimal) -> tuple[Decimal, str | None]:
    """The number, and why DECIMAL(38,9) cannot hold it (None when it can)."""
    number = value if isinstance(value, Decimal) else Decimal(value)
    _, digits, exponent = number.as_tuple()
    if exponent >= -DECIMAL_SCALE and len(digits) + exponent <= INTEGER_DIGITS:  # type: ignore[operator]
        return number, None  # as written, it fits (the usual case)
    if not number:
        return Decimal(0).quantize(_NANO), None
    _, digits, exponent = number.normalize(_EXACT).as_tuple()
    assert isinstance(exponent, int)
    places = max(0, -exponent)
    whole = len(digits) + exponent
    if places > DECIMAL_SCALE:
        return number, f"{places} decimal places; the column keeps {DECIMAL_SCALE}"
    if whole > INTEGER_DIGITS:
        return number, f"{whole} digits before the point; the column holds {INTEGER_DIGITS}"
    return number.quantize(_NANO, context=_EXACT), None


def _what(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _number(value: Any) -> tuple[int | Decimal | None, bool]:
    """(the number a value is, or a string holding one, exactly; None otherwise), sent as text."""
    if _is_number(value):
        return value, False
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        return (int(text) if _INTEGER.fullmatch(text) else Decimal(text)), True
    return None, False


def fit_integer(value: Any) -> Fitted:
    if type(value) is int and _INT64[0] <= value <= _INT64[1]:
        return value, None, None
    number, as_text = _number(value)
    if number is None:
        return None, KEPT, f"{_what(value)}, not an integer"
    if isinstance(number, Decimal):
        if number.adjusted() > 18:
            return None, KEPT, "beyond a 64-bit integer"
        if number != number.to_integral_value():
            return None, KEPT, "has a fraction"
        number, as_text = int(number), True
    if not _INT64[0] <= number <= _INT64[1]:
        return None, KEPT, "beyond a 64-bit integer"
    return number, CONVERTED if as_text else None, None


def fit_decimal(value: Any) -> Fitted:
    number, as_text = _number(value)
    if number is None:
        return None, KEPT, f"{_what(value)}, not a number"
    fitted, why = _decimal(number)
    if why:
        return None, KEPT, why
    return fitted, CONVERTED if as_text else None, None


def fit_string(value: Any) -> Fitted:
    if isinstance(value, str):
        return value, None, None
    return json_text(value), CONVERTED, None


def fit_boolean(value: Any) -> Fitted:
    if isinstance(value, bool):
        return value, None, None
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true", CONVERTED, None
    return None, KEPT, f"{_what(value)}, not a boolean"


def fit_date(value: Any) -> Fitted:
    if not isinstance(value, str):
        return None, KEPT, f"{_what(value)}, not a date"
    found = _DATE.fullmatch(value)
    if not found:
        return None, KEPT, "not an ISO date (YYYY-MM-DD)"
    try:
        return date(*map(int, found.groups())), None, None
    except ValueError:
        return None, KEPT, "not a day of the calendar"


def fit_timestamp(value: Any) -> Fitted:
    if not isinstance(value, str):
        return None, KEPT, f"{_what(value)}, not an ISO timestamp"
    found = _TIMESTAMP.fullmatch(value.strip())
    if not found:
        return None, KEPT, "not an ISO timestamp"
    *moment_parts, fraction, offset = found.groups()
    digits = fraction or ""
    try:
        zone = UTC
        if offset and offset not in ("Z", "z"):
            sign = -1 if offset[0] == "-" else 1
            hh, mm = offset[1:3], offset[-2:] if len(offset) > 3 else "00"
            zone = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
        parts = (int(part or 0) for part in moment_parts)  # the time of day may be absent
        moment = datetime(*parts, int(digits[:6].ljust(6, "0")), tzinfo=zone).astimezone(UTC)
    except ValueError as exc:
        return None, KEPT, f"not a valid timestamp ({exc})"
    if digits[6:].strip("0"):
        return moment, MICROSECONDS, f"{len(digits)} fractional digits; the column keeps 6"
    return moment, None, None


FITTERS = {
    "string": fit_string,
    "integer": fit_integer,
    "decimal": fit_decimal,
    "boolean": fit_boolean,
    "date": fit_date,
    "timestamp": fit_timestamp,
}


# ----------------------------------------------------------------------------- notes


def suggested_type(kind: str, example: str) -> str:
    """The catalogue type that holds a value that did not fit `kind`: decimal for a number
    that an integer cannot hold but DECIMAL(38,9) can, else string."""
    text = example.strip()
    if kind == "integer" and _NUMBER.fullmatch(text) and not _decimal(text)[1]:
        return "decimal"
    return "string"


@dataclass(frozen=True)
class ValueNote:
    """Values of one field that came in a form other than its type, for the run's summary."""

    operation: str
    field: str
    """The catalogue's name: `amountWTax`, `items.amountWTax`, `conversions.breakdown.currency`."""
    table: str
    """The raw table holding it (`order_detail__items` for a list's items)."""
    column: str
    kind: str
    """The catalogue's type of the field."""
    outcome: str
    reason: str | None
    example: str
    count: int = 1
    fits: str = "string"
    """The catalogue type that would hold every value noted (see suggested_type)."""
    key: bool = False
    """A primary-key field that did not fit: its records cannot be merged (KeyDoesNotFit)."""

    @property
    def raw_column(self) -> str:
        return self.column + RAW_SUFFIX

    def merged(self, other: ValueNote) -> ValueNote:
        fits = self.fits if self.fits == other.fits else "string"
        return replace(self, count=self.count + other.count, fits=fits)

    @property
    def override(self) -> str | None:
        """The catalogue override that types the field so that its values fit."""
        if self.outcome != KEPT:
            return None
        owner, _, name = self.field.rpartition(".")
        typed = f"{{{name}: {self.fits}}}"
        entry = f"nested: {{{owner}: {typed}}}" if owner else f"fields: {typed}"
        return f"operations: {{{self.operation}: {{{entry}}}}}"

    def describe(self) -> str:
        """One line for the user: what came, what was done, what would type it."""
        values = "1 value" if self.count == 1 else f"{self.count:,} values"
        where = f"{self.operation}.{self.field} ({self.table}.{self.column}, {self.kind})"
        example = self.example if len(self.example) <= 80 else self.example[:77] + "..."
        if self.outcome == CONVERTED:
            return f"{where}: {values} sent in another form, converted exactly, e.g. {example!r}"
        if self.outcome == MICROSECONDS:
            return (
                f"{where}: {values} finer than microseconds ({self.reason}), e.g. {example!r}: "
                f"{self.column} holds it to the microsecond, the exact text is in "
                f"{self.raw_column}; nothing to change"
            )
        return (
            f"{where}: {values} not fitting ({self.reason}), e.g. {example!r}: {self.column} "
            f"is NULL there, the exact text is in {self.raw_column}. To type the field "
            f"properly, add to the catalogue overrides: {self.override}"
        )


class ValueNotes:
    """Notes of a run, merged per (operation, field, outcome); thread-safe."""

    def __init__(self) -> None:
        self._notes: dict[tuple[str, str, str, str], ValueNote] = {}
        self._lock = threading.Lock()

    def add(self, notes: Iterable[ValueNote]) -> list[ValueNote]:
        """Record notes; returns those seen for the first time in this run."""
        new = []
        with self._lock:
            for note in notes:
                key = (note.operation, note.table, note.field, note.outcome)
                seen = self._notes.get(key)
                if seen is None:
                    self._notes[key] = note
                    new.append(note)
                else:
                    self._notes[key] = seen.merged(note)
        return new

    def all(self) -> list[ValueNote]:
        with self._lock:
            return list(self._notes.values())


class PageNotes:
    """Collects the notes of one decoded page (one note per field and outcome)."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self._notes: dict[tuple[str, str, str], ValueNote] = {}

    def add(
        self,
        field: str,
        table: str,
        column: str,
        kind: str,
        outcome: str,
        reason: str | None,
        value: Any,
        key: bool = False,
    ) -> None:
        where = (table, field, outcome)
        seen = self._notes.get(where)
        if seen is not None and (outcome != KEPT or seen.fits == "string"):
            self._notes[where] = replace(seen, count=seen.count + 1)
            return
        text = raw_text(value)
        fits = suggested_type(kind, text) if outcome == KEPT else "string"
        note = ValueNote(
            self.operation, field, table, column, kind, outcome, reason, text, 1, fits, key
        )
        self._notes[where] = note if seen is None else seen.merged(note)

    def notes(self) -> tuple[ValueNote, ...]:
        return tuple(self._notes.values())


class KeyDoesNotFit(IngestionError):
    """A primary-key value the key's type cannot hold: the record could not be merged."""

    def __init__(self, note: ValueNote) -> None:
        super().__init__(
            f"{note.operation}: the key field {note.field} is {note.kind} in the catalogue, but "
            f"the API sent {note.example!r} ({note.reason}). Records are merged on their key, so "
            f"nothing of {note.operation} was loaded. Add to the catalogue overrides "
            f"(INCOMAKER_CATALOGUE_OVERRIDES): {note.override}, and run again."
        )
        self.note = note

    def __reduce__(self) -> tuple[object, ...]:
        return (KeyDoesNotFit, (self.note,))
