"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_world():
    """The stand-in's small world for seed 1, built once per test session."""
    from standin import build_world

    return build_world(1, "small")
