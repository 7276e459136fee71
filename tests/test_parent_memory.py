"""The memory of parents' fingerprints for `changed_only` details, packed in dlt's state."""

from __future__ import annotations

from typing import Any

import orjson

from incomaker_elt.ingestion.parent_memory import (
    CHANGES_KEY,
    PACKED_KEY,
    UNPACKED_KEY,
    ParentMemory,
    unpack,
)


def run(state: dict[str, Any], seen: dict[str, Any], forget=None) -> set[str]:
    """One run's memory over `state`: the parents it finds new or changed among `seen`."""
    memory = ParentMemory(forget, state=lambda: state)
    return {key for key, entry in seen.items() if memory.remember(key, entry)}


def test_a_run_keeps_the_memory_packed_and_only_its_changes_as_entries() -> None:
    state: dict[str, Any] = {}
    parents = {str(n): [f"{n:016x}", "2026-06-01"] for n in range(5_000)}
    assert run(state, parents) == set(parents)  # all new
    assert unpack(state[PACKED_KEY]) == {}
    assert state[CHANGES_KEY] == parents

    moved = {**parents, "7": ["changed", "2026-06-01"], "new": ["n", "2026-06-02"]}
    assert run(state, moved) == {"7", "new"}
    assert unpack(state[PACKED_KEY]) == parents  # the runs before, one string
    assert state[CHANGES_KEY] == {"7": ["changed", "2026-06-01"], "new": ["n", "2026-06-02"]}
    assert len(orjson.dumps(state)) < len(orjson.dumps(moved)) / 2

    assert run(state, moved) == set()  # nothing changed since
    assert unpack(state[PACKED_KEY]) == moved and state[CHANGES_KEY] == {}


def test_the_memory_an_earlier_version_kept_unpacked_is_read_then_packed() -> None:
    old = {"1": ["a", "2026-06-01"], "2": ["b", "2026-06-01"]}
    state: dict[str, Any] = {UNPACKED_KEY: dict(old)}
    assert run(state, {"1": ["a", "2026-06-01"], "2": ["b2", "2026-06-01"]}) == {"2"}
    assert UNPACKED_KEY not in state and unpack(state[PACKED_KEY]) == old


def test_forgotten_entries_count_as_new_and_are_dropped_from_the_memory() -> None:
    state: dict[str, Any] = {}
    run(state, {"old": ["a", "2026-01-01"], "recent": ["b", "2026-06-01"]})
    too_old = lambda entry: entry[1] < "2026-03-01"  # noqa: E731
    assert run(state, {"recent": ["b", "2026-06-01"]}, too_old) == set()
    assert unpack(state[PACKED_KEY]) == {"recent": ["b", "2026-06-01"]}
    assert run(state, {"old": ["a", "2026-01-01"]}) == {"old"}  # read again: asked again
