"""Per-id operations answered from an index instead of one query per id.

A client walking a per-id operation (`/campaigns/{campaignId}/recipients`, `/orders/{orderId}`,
`/contacts/details?ids=...`) asks for thousands of ids in a row. A DuckDB query costs 15-90 ms
however few rows it returns, so one query per id made these walks the slowest thing the stand-in
did. Instead, the first request for an id runs the operation's handler in block mode
(`Ask.block`): one query renders the records of every id in a block of parent ids, ordered by id
and then by primary key, so that each id's records are one contiguous run of rows, byte for byte
what the one-id query renders. Each later request for an id of the block is a binary search and
a byte slice.

A block holds about ROWS_PER_BLOCK records, judged from the world's table sizes, so an index
stays a few tens of MB at `large` (the order details of a million orders are a hundred blocks,
not one 600 MB index) while a small world's operation is one block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from incomaker_elt.contract.catalogue import Operation
from incomaker_elt.standin.frames import Frame
from incomaker_elt.standin.operations.ask import Block

ROWS_PER_BLOCK = 100_000
# Details with nested lists are built as Python dicts before rendering: a block of them costs
# many times its JSON in transient memory, which the process keeps, so their blocks are smaller.
PYTHON_ROWS_PER_BLOCK = 20_000
PYTHON_BUILT = frozenset({"abandoned_cart_detail", "contacts_details", "order_detail"})
# Ids past this are refused by the index (answered by the one-id query): block bounds must stay
# inside DuckDB's BIGINT.
MAX_INDEXED_ID = 1 << 62

# Per-id operation -> (the world table with one row per parent id, the world table whose rows
# measure the operation's records). Their ratio sets how many ids a block spans.
VOLUME: dict[str, tuple[str, str]] = {
    "abandoned_cart_detail": ("carts", "cart_items"),
    "campaign_contacts_timeline": ("campaigns", "events"),
    "campaign_contacts": ("campaigns", "sends"),
    "campaign_conversions": ("campaigns", "conversions"),
    "campaign_recipients": ("campaigns", "sends"),
    "campaign_recipient_activity": ("campaigns", "events"),
    "campaign_link_clicks": ("campaigns", "events"),
    "contacts_details": ("contacts", "contacts"),
    "delivery_specific_conversions": ("deliveries", "conversions"),
    "delivery_recipients": ("deliveries", "sends"),
    "delivery_link_clicks": ("deliveries", "events"),
    "delivery_detail": ("deliveries", "deliveries"),
    "smartflow_daily_detail": ("deliveries", "deliveries"),
    "rfm_contact_detail": ("contacts", "contacts"),
    "order_detail": ("orders", "order_items"),
    "product_purchases": ("products", "order_items"),
    "product_detail": ("products", "products"),
}


def key_field(op: Operation) -> str:
    """The record field holding the parent id: the placeholder's name, or for a query-parameter
    list such as `ids` of contacts details, the first primary key field (contactId)."""
    assert op.parent is not None
    return op.parent.into if op.parent.into in op.fields else op.primary_key[0]


def ids_per_block(op: Operation, counts: dict[str, int]) -> int | None:
    """How many consecutive ids one block spans; None: one block for all ids (cells)."""
    if op.name not in VOLUME:
        return None
    ids_table, volume_table = VOLUME[op.name]
    ids, volume = counts.get(ids_table, 0), counts.get(volume_table, 0)
    if not ids or not volume:
        return 1 << 20
    rows = PYTHON_ROWS_PER_BLOCK if op.name in PYTHON_BUILT else ROWS_PER_BLOCK
    return max(1, rows * ids // volume)


def block_of(value: Any, span: int | None) -> Block:
    if span is None:
        return Block()
    first = value // span * span
    return Block(first, first + span - 1)


def indexable(value: Any, span: int | None) -> bool:
    if span is None:
        return isinstance(value, str)
    return isinstance(value, int) and 0 < value < MAX_INDEXED_ID


def _find(keys: np.ndarray, value: Any) -> int | None:
    """The position of `value` in the sorted `keys` (integer ids or cell codes), or None."""
    i = int(np.searchsorted(keys, value))
    return i if i < len(keys) and keys[i] == value else None


class IdIndex:
    """One block's records, each id's as a run of rows of one frame."""

    def __init__(self, frame: Frame, keys: np.ndarray, known: np.ndarray | None, missing: str):
        self.frame = frame
        if len(keys) and np.any(keys[1:] < keys[:-1]):
            raise ValueError("an index's rows must be ordered by id")
        changes = np.flatnonzero(keys[1:] != keys[:-1]) + 1 if len(keys) else np.empty(0, int)
        self._starts = np.concatenate(([0], changes)).astype(np.int64)
        self._stops = np.concatenate((changes, [len(keys)])).astype(np.int64)
        self._ids = keys[self._starts] if len(keys) else keys
        # ids the operation knows; None: every id (absent ones have no records, not a 404)
        self._known = None if known is None else np.unique(known)
        self.missing = missing
        arrays = [self._starts, self._stops, self._ids, *([] if known is None else [self._known])]
        self.nbytes = frame.nbytes + 8 * (len(frame) + 1) + sum(a.nbytes for a in arrays)

    def knows(self, value: Any) -> bool:
        return self._known is None or _find(self._known, value) is not None

    def rows(self, value: Any) -> tuple[int, int]:
        """The id's rows [start, stop) in the frame; empty when it has none."""
        i = _find(self._ids, value)
        if i is None:
            return 0, 0
        return int(self._starts[i]), int(self._stops[i])


class Rows:
    """Runs of rows of index frames, seen as one response's records (the interface of Frame
    that the service's body assembly uses)."""

    def __init__(self, runs: list[tuple[Frame, int, int]]) -> None:
        self._runs = [run for run in runs if run[2] > run[1]]
        self.length = sum(stop - start for _, start, stop in self._runs)

    def __len__(self) -> int:
        return self.length

    def json_bytes(self, start: int, stop: int, drift: bool = False) -> bytes:
        parts, position = [], 0
        for frame, first, last in self._runs:
            size = last - first
            lo, hi = max(start, position), min(stop, position + size)
            if lo < hi:
                parts.append(
                    frame.json_bytes(first + lo - position, first + hi - position, drift, lo)
                )
            position += size
            if position >= stop:
                break
        return parts[0] if len(parts) == 1 else b",".join(parts)
