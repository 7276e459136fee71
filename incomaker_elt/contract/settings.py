"""Every setting of the pipeline, read from environment variables with sane defaults.

One place for each fact: ingestion, dbt, Dagster and the CLI all take the warehouse path, the raw
dataset, the API address and the reference currency from here.

The API address and token are the one exception to "environment variables only": each may also
live where dlt documents it, `base_url` and `api_token` under `[sources.incomaker]` in
`.dlt/config.toml` and `.dlt/secrets.toml` (of the current directory, or dlt's global folder).
`api_address()` and `api_token()` are their one reader: the environment first, then dlt's config
and secrets (dlt is imported only then, so importing this module stays cheap).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]

RAW_DATASET = "incomaker_raw"
"""DuckDB schema holding the tables loaded from the API, one per catalogue operation."""

DEFAULT_WAREHOUSE = "warehouse/incomaker.duckdb"

DEFAULT_SCHEDULE_CRON = "0 2 * * *"
"""Nightly at 02:00: the API's day is over, and the marts are ready before office hours."""

DEFAULT_SCHEDULE_TIMEZONE = "Europe/Prague"
"""Incomaker accounts live in Central Europe: the nightly schedule runs on its clock."""

DEFAULT_FRESHNESS_DEADLINE_CRON = "0 6 * * *"
"""By 06:00 (schedule timezone) last night's load must be in: the raw freshness checks' deadline."""

DEFAULT_PARTITIONS_START = "2025-01-01"
"""First daily partition of the date-windowed raw tables (the stand-in's world starts here)."""

DEFAULT_INGEST_CONCURRENCY = 8
"""Requests in flight at once during ingestion: fast on loopback, polite to the real API."""


def default_fetch_processes() -> int:
    """One process fetching and decoding per core this process may use, at most four: beyond
    that dlt's own work in the run's process sets the pace."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


DEFAULT_REQUESTS_PER_SECOND = 10.0
"""Requests started per second against a remote API (INCOMAKER_REQUESTS_PER_SECOND): a
production API is shared with the account's own users. No cap without a token or against this
machine (the stand-in that `incomaker-elt run` starts)."""

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")

API_ADDRESS_VARIABLE = "INCOMAKER_BASE_URL"
API_TOKEN_VARIABLE = "INCOMAKER_API_TOKEN"
DLT_API_ADDRESS_KEY = "sources.incomaker.base_url"
"""`base_url` under `[sources.incomaker]` in dlt's `.dlt/config.toml`."""
DLT_API_TOKEN_KEY = "sources.incomaker.api_token"
"""`api_token` under `[sources.incomaker]` in dlt's `.dlt/secrets.toml`."""

NO_API_ADDRESS = (
    "no API address: set INCOMAKER_BASE_URL (or base_url under [sources.incomaker] in "
    ".dlt/config.toml); for the stand-in, run `incomaker-elt simulate` and use the address it "
    "prints, or run through `incomaker-elt run`, which starts it"
)
NO_API_TOKEN = (
    "no API token: set INCOMAKER_API_TOKEN (or api_token under [sources.incomaker] in "
    ".dlt/secrets.toml)"
)

DEFAULT_WAREHOUSE_LOCK_TIMEOUT = 300.0
"""Seconds a writer waits for another process (a BI tool, a notebook) to let go of the warehouse
file before it fails and names that process (INCOMAKER_WAREHOUSE_LOCK_TIMEOUT)."""

DEFAULT_SERVING_STORAGE_VERSION = "v1.4.0"
"""DuckDB storage format of the serving copy (INCOMAKER_SERVING_STORAGE_VERSION), named by the
oldest DuckDB that opens it: v1.4.0 is read by DuckDB 1.4 and newer, which current BI drivers
bundle (docs/serving.md). DuckDB 2.0's own format locks out every DuckDB 1.x client."""

SERVING_STORAGE_LINES = ("v1.0", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v2.0")
"""DuckDB release lines whose storage format the serving copy can be written in; a format changes
only between lines, so v1.4.3 means v1.4.0. `latest` is the installed DuckDB's newest format."""

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
"""Holds the committed dagster.yaml (run queue, concurrency pool, retries); runtime files beside."""


@dataclass(frozen=True)
class Settings:
    warehouse_path: Path
    base_url: str | None
    api_token: str | None = field(repr=False)
    """Never printed: left out of the repr, so a logged Settings does not carry it."""
    catalogue_overrides: Path | None
    schedule_cron: str = DEFAULT_SCHEDULE_CRON
    schedule_timezone: str = DEFAULT_SCHEDULE_TIMEZONE
    partitions_start: date = date.fromisoformat(DEFAULT_PARTITIONS_START)
    alert_webhook_url: str | None = None
    freshness_deadline_cron: str = DEFAULT_FRESHNESS_DEADLINE_CRON
    dagster_home: Path = DEFAULT_DAGSTER_HOME
    ingest_concurrency: int = DEFAULT_INGEST_CONCURRENCY
    fetch_processes: int = field(default_factory=default_fetch_processes)
    """Processes fetching and decoding pages beside the run's (incomaker_elt/ingestion/
    client_process.py); `ingest_concurrency` is split between them."""
    requests_per_second: float | None = None
    """Cap on requests started per second; None: no cap. load_settings() gives 10 for a remote
    API (see DEFAULT_REQUESTS_PER_SECOND)."""
    dlt_destination: str | None = None
    """A dlt destination name (configured in dlt's own config); None: DuckDB at warehouse_path."""
    warehouse_lock_timeout: float = DEFAULT_WAREHOUSE_LOCK_TIMEOUT
    serving_storage_version: str = DEFAULT_SERVING_STORAGE_VERSION
    source_today: date | None = None
    """The API's today when it is not the calendar's: a stand-in started with `--today` shows
    everything that happened by the end of that day (INCOMAKER_SOURCE_TODAY, set by whoever starts
    it). None: the real API, whose today is still running. Partitions, the nightly range and
    freshness all take their last day from
    incomaker_elt.orchestration.partitions.last_complete_day."""

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


class ConfigurationError(ValueError):
    """A setting has a value the pipeline cannot use; the message names it and what to set.

    A ValueError, so callers that caught ValueError from load_settings() keep working.
    """


def _resolve(path: str) -> Path:
    """Relative paths are taken from the current directory, as any command-line tool does."""
    return Path(path).expanduser().resolve()


def _env(variable: str, default: str) -> str:
    return os.environ.get(variable) or default


def _date(variable: str, default: str) -> date:
    value = _env(variable, default)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(
            f"{variable}={value!r} is not an ISO date such as 2025-01-01; set a date or unset it"
        ) from None


def _positive_int(variable: str, default: int) -> int:
    value = _env(variable, str(default))
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigurationError(
            f"{variable}={value!r} must be a whole number of at least 1; set one or unset it"
        )
    return number


def _seconds(variable: str, default: float) -> float:
    value = _env(variable, str(default))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also rejects nan
        raise ConfigurationError(
            f"{variable}={value!r} must be a number of seconds (0 or more); set one or unset it"
        )
    return seconds


def warehouse_lock_timeout() -> float:
    """INCOMAKER_WAREHOUSE_LOCK_TIMEOUT: how long a writer waits for the warehouse file."""
    return _seconds("INCOMAKER_WAREHOUSE_LOCK_TIMEOUT", DEFAULT_WAREHOUSE_LOCK_TIMEOUT)


DBT_EXECUTABLE_VARIABLE = "INCOMAKER_DBT_EXECUTABLE"
DBT_ENVIRONMENT = "dbt"
"""The folder, inside the pipeline's own Python environment, of the environment that holds dbt
(`make install` creates `.venv/dbt`): dbt-core apart, so that loading the Dagster definitions does
not import it (DECISIONS.md)."""


def dbt_executable_setting() -> Path | None:
    """INCOMAKER_DBT_EXECUTABLE: the `dbt` to run the project with; unset, the one `make install`
    put in .venv/dbt, else the one beside this Python, else `dbt` on PATH."""
    value = os.environ.get(DBT_EXECUTABLE_VARIABLE)
    if not value:
        return None
    path = _resolve(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConfigurationError(
            f"{DBT_EXECUTABLE_VARIABLE}={value!r} is not an executable file; point it at a dbt "
            "(such as .venv/dbt/bin/dbt) or unset it"
        )
    return path


def serving_storage_version() -> str:
    """INCOMAKER_SERVING_STORAGE_VERSION: the oldest DuckDB that must open the serving copy, as
    `v1.4.0`, `1.4` or `latest`; returned as DuckDB's STORAGE_VERSION names it (`v1.4.0`)."""
    value = _env("INCOMAKER_SERVING_STORAGE_VERSION", DEFAULT_SERVING_STORAGE_VERSION)
    if value.strip().lower() == "latest":
        return "latest"
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", value.strip())
    line = f"v{match[1]}.{match[2]}" if match else None
    if line not in SERVING_STORAGE_LINES:
        raise ConfigurationError(
            f"INCOMAKER_SERVING_STORAGE_VERSION={value!r} is not a DuckDB version the serving copy "
            f"can be written for; set one of {', '.join(SERVING_STORAGE_LINES)} (a patch such as "
            f"v1.4.3 is fine) or latest, or unset it ({DEFAULT_SERVING_STORAGE_VERSION})"
        )
    return f"{line}.0"


def _from_dlt(key: str, *, secret: bool) -> str | None:
    """A value from dlt's config providers (its environment names such as
    SOURCES__INCOMAKER__API_TOKEN, `.dlt/secrets.toml`, `.dlt/config.toml`)."""
    import dlt  # only when the environment does not have it: dlt takes a second to import

    accessor = dlt.secrets if secret else dlt.config
    try:
        value = accessor.get(key, str)
    except Exception as exc:  # a broken TOML file; its text may hold the token, so not quoted
        raise ConfigurationError(
            f"{key} could not be read from dlt's configuration ({type(exc).__name__}): check "
            f".dlt/config.toml and .dlt/secrets.toml in {Path.cwd()} and in dlt's global folder"
        ) from None
    text = "" if value is None else str(value).strip()
    return text or None


def api_address() -> str | None:
    """The API's address: INCOMAKER_BASE_URL, else `base_url` under [sources.incomaker] in dlt's
    `.dlt/config.toml`; None when neither has one."""
    return os.environ.get(API_ADDRESS_VARIABLE) or _from_dlt(DLT_API_ADDRESS_KEY, secret=False)


def api_token() -> str | None:
    """The API token: INCOMAKER_API_TOKEN, else `api_token` under [sources.incomaker] in dlt's
    `.dlt/secrets.toml`; None when neither has one. Never log what it returns."""
    return os.environ.get(API_TOKEN_VARIABLE) or _from_dlt(DLT_API_TOKEN_KEY, secret=True)


def requests_per_second(base_url: str | None, token: str | None) -> float | None:
    """INCOMAKER_REQUESTS_PER_SECOND (0: no cap); unset: 10 against a remote API, no cap without
    a token or against an API on this machine (the stand-in)."""
    value = os.environ.get("INCOMAKER_REQUESTS_PER_SECOND")
    if value:
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not rate >= 0 or rate == float("inf"):
            raise ConfigurationError(
                f"INCOMAKER_REQUESTS_PER_SECOND={value!r} must be a number of requests per second "
                "(0 for no cap); set one or unset it"
            )
        return rate or None
    host = urlsplit(base_url or "").hostname or ""
    if not token or host in _LOCAL_HOSTS:
        return None
    return DEFAULT_REQUESTS_PER_SECOND


def check_warehouse_writable(settings: Settings) -> None:
    """Fail with one line when the warehouse folder cannot be created or written.

    Asked by creating the folder and a scratch file in it, not by permission bits: that is the
    answer for root, read-only mounts and network folders too.
    """
    folder = settings.warehouse_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".incomaker-write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(
            f"INCOMAKER_WAREHOUSE={settings.warehouse_path}: cannot write in {folder} ({reason}); "
            "point INCOMAKER_WAREHOUSE at a folder you can write"
        ) from None


def load_settings() -> Settings:
    overrides = os.environ.get("INCOMAKER_CATALOGUE_OVERRIDES")
    home = os.environ.get("DAGSTER_HOME")
    today = os.environ.get("INCOMAKER_SOURCE_TODAY")
    base_url, token = api_address(), api_token()
    return Settings(
        warehouse_path=_resolve(os.environ.get("INCOMAKER_WAREHOUSE", DEFAULT_WAREHOUSE)),
        base_url=base_url,
        api_token=token,
        catalogue_overrides=_resolve(overrides) if overrides else None,
        schedule_cron=_env("INCOMAKER_SCHEDULE_CRON", DEFAULT_SCHEDULE_CRON),
        schedule_timezone=_env("INCOMAKER_SCHEDULE_TIMEZONE", DEFAULT_SCHEDULE_TIMEZONE),
        partitions_start=_date("INCOMAKER_PARTITIONS_START", DEFAULT_PARTITIONS_START),
        alert_webhook_url=os.environ.get("INCOMAKER_ALERT_WEBHOOK_URL") or None,
        freshness_deadline_cron=_env(
            "INCOMAKER_FRESHNESS_DEADLINE_CRON", DEFAULT_FRESHNESS_DEADLINE_CRON
        ),
        dagster_home=_resolve(home) if home else DEFAULT_DAGSTER_HOME,
        ingest_concurrency=_positive_int(
            "INCOMAKER_INGEST_CONCURRENCY", DEFAULT_INGEST_CONCURRENCY
        ),
        fetch_processes=_positive_int("INCOMAKER_FETCH_PROCESSES", default_fetch_processes()),
        requests_per_second=requests_per_second(base_url, token),
        dlt_destination=os.environ.get("INCOMAKER_DLT_DESTINATION") or None,
        warehouse_lock_timeout=warehouse_lock_timeout(),
        serving_storage_version=serving_storage_version(),
        source_today=_date("INCOMAKER_SOURCE_TODAY", today) if today else None,
    )
