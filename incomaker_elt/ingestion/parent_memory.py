"""What the parents of `changed_only` details looked like last time, kept compact in dlt's state.

A detail asked for only for new or changed parents needs a memory of every parent's content: at
`large`, 108,000 orders of the last 62 days and 113,000 scored contacts. Kept as one state entry
per parent, dlt's state was 11 MB of JSON, which dlt decodes (walking every value), hashes,
compresses and stores several times in every ingestion run: ~5 s of each run at `large`, for a
state that barely changes overnight.

So the memory of the runs before is one compressed string, decoded once per run, and only this
run's changes are entries of their own; the next run folds them into the string. The state stays
in dlt's, committed with the load package it belongs to, as before.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from typing import Any

import dlt
import orjson

PACKED_KEY = "parent_memory"
"""The memory as of the run's start: zlib-compressed JSON, base64."""
CHANGES_KEY = "parent_changes"
"""Parents new or changed in this run, by key: folded into the packed memory by the next run."""
UNPACKED_KEY = "parent_fingerprints"
"""Where earlier versions kept the memory, one entry per parent: read once, then packed."""


def pack(entries: dict[str, Any]) -> str:
    return base64.b64encode(zlib.compress(orjson.dumps(entries), 1)).decode("ascii")


def unpack(packed: str | None) -> dict[str, Any]:
    if not packed:
        return {}
    return orjson.loads(zlib.decompress(base64.b64decode(packed)))


class ParentMemory:
    """One `changed_only` detail's memory of its parents, in the detail resource's dlt state.

    Used from within the resource's own calls (`state` reads `dlt.current.resource_state()`);
    one instance per source built, so a retried extract starts again from the state dlt rewound.
    `forget(entry)` says which remembered entries a run drops (too old to be read again).
    """

    def __init__(
        self,
        forget: Callable[[Any], bool] | None = None,
        state: Callable[[], dict[str, Any]] = lambda: dlt.current.resource_state(),
    ) -> None:
        self._forget = forget
        self._state = state
        self._entries: dict[str, Any] | None = None
        self._changes: dict[str, Any] = {}

    def _recall(self) -> dict[str, Any]:
        if self._entries is None:
            state = self._state()
            entries = state.pop(UNPACKED_KEY, None) or {}
            entries.update(unpack(state.pop(PACKED_KEY, None)))
            entries.update(state.pop(CHANGES_KEY, None) or {})
            if self._forget is not None:
                entries = {k: v for k, v in entries.items() if not self._forget(v)}
            state[PACKED_KEY] = pack(entries)
            self._changes = state[CHANGES_KEY] = {}
            self._entries = entries
        return self._entries

    def remember(self, key: str, entry: Any) -> bool:
        """Remember `entry` for the parent `key`; whether it is new or differs from the last."""
        entries = self._recall()
        if entries.get(key) == entry:
            return False
        entries[key] = self._changes[key] = entry
        return True
