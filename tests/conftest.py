"""Shared fixtures.

The expensive ones are built once per session and shared read-only: the small world, and one
fresh full load of it (`full_load`), which the tests that compare a warehouse with a fresh full
load read instead of loading their own. A test that must change a shared warehouse changes a copy
of it (shutil.copyfile).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from api_pages import DIALECT_OVERRIDES, dialect_catalogue

from incomaker_elt.contract.catalogue import Catalogue
from incomaker_elt.contract.settings import Settings

if TYPE_CHECKING:
    from incomaker_elt.ingestion.pipeline import LoadSummary
    from incomaker_elt.orchestration.transform import BuildSummary

FULL_LOAD_START = date(2025, 1, 1)
"""The first day of the shared full load: the partitions' start, the whole history."""
FULL_LOAD_TOKEN = "standin-token"


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


@dataclass(frozen=True)
class FullLoad:
    """A fresh full load of the small world: `incomaker-elt ingest` over the whole history up to
    the stand-in's today, then `dbt build` (what `incomaker-elt transform` runs). Shared by the
    session: read it (read-only), or change a copy of the file."""

    warehouse: Path
    settings: Settings
    today: date
    start: date
    ingestion: LoadSummary
    build: BuildSummary
    seconds: float


@pytest.fixture(scope="session")
def full_load(small_world, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullLoad]:
    """One fresh full load of the small world at the stand-in's default today, built once per
    session (a minute or two): ingestion from FULL_LOAD_START, then `dbt build`, which raises if
    any model or data test fails. Read-only for its users: the session fails at its end if the
    file was written."""
    from incomaker_elt.ingestion.pipeline import run_ingestion
    from incomaker_elt.orchestration import transform
    from incomaker_elt.standin import DEFAULT_TODAY, StandIn

    folder = tmp_path_factory.mktemp("full_load")
    settings = Settings(
        warehouse_path=folder / "warehouse" / "incomaker.duckdb",
        base_url=None,
        api_token=FULL_LOAD_TOKEN,
        catalogue_overrides=None,
        dagster_home=folder / "dagster_home",
    )
    settings.warehouse_path.parent.mkdir(parents=True)
    standin = StandIn(small_world, today=DEFAULT_TODAY, token=FULL_LOAD_TOKEN)
    started = time.monotonic()
    transform.prepare_manifest()
    ingestion = run_ingestion(
        settings, start=FULL_LOAD_START, end=DEFAULT_TODAY, transport=standin.transport()
    )
    build = transform.build(settings)
    seconds = time.monotonic() - started
    written = _written(settings.warehouse_path)
    yield FullLoad(
        settings.warehouse_path,
        settings,
        DEFAULT_TODAY,
        FULL_LOAD_START,
        ingestion,
        build,
        seconds,
    )
    assert _written(settings.warehouse_path) == written, (
        f"a test wrote the shared full load {settings.warehouse_path}: change a copy "
        "of it instead, the tests after it read it as loaded"
    )


def _written(path: Path) -> tuple[int, int]:
    """When and how much a file was last written."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
