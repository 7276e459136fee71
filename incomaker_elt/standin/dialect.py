"""How the stand-in writes values in the dialect its catalogue describes.

The world keeps integer ids and UTC timestamps. The catalogue says how the API shows them: an id
field typed `string` is shown as a UUID (the vendor's convention for campaign and smartflow ids),
timestamps carry the offset of the catalogue's `timestamp_zone`, and `api_names` rename fields.
Requests may name such ids by their UUIDs; `integer_id` reads them back.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from incomaker_elt.contract.catalogue import Operation

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-a[0-9a-f]{3}-([0-9a-f]{12})$")


def is_id_field(name: str) -> bool:
    return name.endswith("Id") or name == "id"


_CAMEL_WORDS = re.compile(r"[A-Z]?[a-z0-9]+")


def id_kind(field: str) -> str:
    """What a field's id refers to: recoveredOrderId and orderId both name an order (orderId),
    duplicateOfContactId a contact. Fields naming one kind show one UUID for one id."""
    words = _CAMEL_WORDS.findall(field)
    if len(words) < 2:
        return field
    kind = words[-2] + words[-1]
    return kind[0].lower() + kind[1:]


@cache
def uuid_prefix(field: str) -> str:
    """The first 24 characters of every UUID of one kind of id (campaignId, smartflowId...)."""
    digest = hashlib.blake2b(id_kind(field).encode(), digest_size=10).hexdigest()
    return f"{digest[0:8]}-{digest[8:12]}-4{digest[13:16]}-a{digest[17:20]}-"


def to_uuid(field: str, number: int) -> str:
    return f"{uuid_prefix(field)}{number:012x}"


def integer_id(field: str, value: str) -> int | None:
    """The world's id behind a UUID this stand-in gave for `field`; None if it is not one."""
    match = _UUID.match(value.lower())
    if not match or not value.lower().startswith(uuid_prefix(field)):
        return None
    return int(match.group(1), 16)


def shows_as_uuid(field: str, kind: str) -> bool:
    """An id the catalogue types as text: the world's integer is shown as a UUID."""
    return kind == "string" and is_id_field(field)


def sql_uuid(column: str, field: str) -> str:
    return f"""'"{uuid_prefix(field)}' || printf('%012x', "{column}") || '"'"""


def sql_timestamp(column: str, zone: str) -> str:
    """SQL giving the JSON text of a UTC timestamp column with the zone's offset."""
    c = f'"{column}"'
    if zone.upper() in ("UTC", "Z", "ETC/UTC"):
        return f"""coalesce(strftime({c}, '"%Y-%m-%dT%H:%M:%SZ"'), 'null')"""
    local = f"timezone('{zone}', timezone('UTC', {c}))"
    minutes = f"CAST((epoch({local}) - epoch({c})) // 60 AS INTEGER)"
    offset = (
        f"CASE WHEN {minutes} < 0 THEN '-' ELSE '+' END || "
        f"lpad(CAST(abs({minutes}) // 60 AS VARCHAR), 2, '0') || ':' || "
        f"lpad(CAST(abs({minutes}) % 60 AS VARCHAR), 2, '0')"
    )
    return (
        f"""CASE WHEN {c} IS NULL THEN 'null' ELSE """
        f"""'"' || strftime({local}, '%Y-%m-%dT%H:%M:%S') || {offset} || '"' END"""
    )


def _render_value(field: str, kind: str | None, value: Any, zone: ZoneInfo | None) -> Any:
    if kind == "decimal" and isinstance(value, int) and not isinstance(value, bool):
        return value / 100  # integer hundredths, as queries give them
    if kind == "string" and isinstance(value, int) and not isinstance(value, bool):
        return to_uuid(field, value) if is_id_field(field) else str(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        if zone is None:
            return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return aware.astimezone(zone).isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _zone(name: str) -> ZoneInfo | None:
    return None if name.upper() in ("UTC", "Z", "ETC/UTC") else ZoneInfo(name)


def render_record(op: Operation, record: dict[str, Any], zone_name: str) -> dict[str, Any]:
    """A record built in Python, as the API shows it (names, ids, timestamps, decimals, nested
    lists and objects)."""
    zone = _zone(zone_name)

    def render(item: dict[str, Any], kinds: dict[str, str], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in item.items():
            inner = op.nested.get(path + name, {})
            if isinstance(value, dict):
                value = render(value, inner, f"{path}{name}.")
            elif isinstance(value, list):
                value = [render(v, inner, f"{path}{name}.") for v in value]
            else:
                value = _render_value(name, kinds.get(name), value, zone)
            out[name] = value
        return out

    return {op.api_name(name): value for name, value in render(record, op.fields, "").items()}
