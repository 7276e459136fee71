"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_pages import DIALECT_OVERRIDES, dialect_catalogue

from incomaker_elt.contract.catalogue import Catalogue


@pytest.fixture(scope="session")
def small_world():
    """The stand-in's small world for seed 1, built once per test session."""
    from incomaker_elt.standin import build_world

    return build_world(1, "small")


@pytest.fixture(scope="session", params=list(DIALECT_OVERRIDES))
def dialect(request, tmp_path_factory) -> tuple[str, Catalogue, Path | None]:
    """(name, catalogue, override file) of each paging dialect the suite is run in: the vendor's
    offset/limit (the catalogue as it is) and Spring's page/size (an override file only)."""
    name = request.param
    catalogue, override = dialect_catalogue(name, tmp_path_factory.mktemp(f"dialect-{name}"))
    return name, catalogue, override
