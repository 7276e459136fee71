"""Every setting of the pipeline, read from environment variables with sane defaults.

One place for each fact: ingestion, dbt, Dagster and the CLI all take the warehouse path, the raw
dataset, the API address and the reference currency from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

REFERENCE_CURRENCY = "CZK"
"""Currency in which Incomaker reports `...Reference` amounts and in which the marts sum money."""

RAW_DATASET = "incomaker_raw"
"""DuckDB schema holding the tables loaded from the API, one per catalogue operation."""

DEFAULT_WAREHOUSE = "warehouse/incomaker.duckdb"
DEFAULT_STANDIN_PORT = 8765


@dataclass(frozen=True)
class Settings:
    warehouse_path: Path
    base_url: str | None
    api_token: str | None
    catalogue_overrides: Path | None

    @property
    def warehouse_dir(self) -> Path:
        return self.warehouse_path.parent

    @property
    def serving_warehouse_path(self) -> Path:
        """Read-only copy published for BI tools after a successful run."""
        return self.warehouse_path.with_name(self.warehouse_path.stem + "_serving.duckdb")

    @property
    def dlt_working_dir(self) -> Path:
        """dlt's pipeline state lives beside the warehouse, so deleting one resets both."""
        return self.warehouse_dir / ".dlt"


def _resolve(path: str) -> Path:
    """Relative paths are taken from the current directory, as any command-line tool does."""
    return Path(path).expanduser().resolve()


def load_settings() -> Settings:
    overrides = os.environ.get("INCOMAKER_CATALOGUE_OVERRIDES")
    return Settings(
        warehouse_path=_resolve(os.environ.get("INCOMAKER_WAREHOUSE", DEFAULT_WAREHOUSE)),
        base_url=os.environ.get("INCOMAKER_BASE_URL") or None,
        api_token=os.environ.get("INCOMAKER_API_TOKEN") or None,
        catalogue_overrides=_resolve(overrides) if overrides else None,
    )
