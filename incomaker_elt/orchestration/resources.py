"""The two things every step talks to, as Dagster resources: the Incomaker API and the warehouse.

Their configuration shows on the Resources page of the Dagster UI (address, request rate,
warehouse path, lock timeout); the token never does. It is configured as `EnvVar` when it comes
from INCOMAKER_API_TOKEN, so the UI names the variable, and left unset when it lives in dlt's
`.dlt/secrets.toml`, where the step reads it when it runs (incomaker_elt.contract.settings
.api_token, the one reader of the address and token). `api_resource` picks which from the
settings.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
from pydantic import Field

from incomaker_elt.contract.settings import (
    API_TOKEN_VARIABLE,
    NO_API_ADDRESS,
    NO_API_TOKEN,
    Settings,
    api_token,
)
from incomaker_elt.ingestion.errors import IngestionError
from incomaker_elt.orchestration.warehouse import read_only

if TYPE_CHECKING:  # the client (httpx) is imported when a step asks for it
    from incomaker_elt.ingestion.client import ApiClient


class IncomakerApi(dg.ConfigurableResource):
    """The Incomaker API: where the raw tables come from and what the reconciliation checks ask."""

    base_url: str | None = Field(
        default=None,
        description=(
            "The API's address: INCOMAKER_BASE_URL, else base_url under [sources.incomaker] in "
            ".dlt/config.toml; the stand-in's loopback address under `incomaker-elt run`."
        ),
    )
    token: str | None = Field(
        default=None,
        repr=False,
        description=(
            "The API token, as the environment variable INCOMAKER_API_TOKEN; unset: read when "
            "a step runs from api_token under [sources.incomaker] in .dlt/secrets.toml."
        ),
    )
    requests_per_second: float | None = Field(
        default=None,
        description=(
            "Requests started per second (INCOMAKER_REQUESTS_PER_SECOND); none: no cap, as "
            "against the stand-in on this machine."
        ),
    )

    def credentials(self) -> tuple[str, str]:
        """The address and token, or an IngestionError saying where to set the missing one."""
        token = self.token or api_token()
        if not self.base_url:
            raise IngestionError(NO_API_ADDRESS)
        if not token:
            raise IngestionError(NO_API_TOKEN)
        return self.base_url, token

    def client(self, *, max_in_flight: int, processes: int | None = None) -> ApiClient:
        """A client of the API (auth, retries, the request rate); close it when done.

        `processes`: the client runs in that many processes of its own, beside the step's dlt
        (the ingestion's: incomaker_elt/ingestion/client_process.py); None: in this one."""
        from incomaker_elt.ingestion.client_process import api_client

        base_url, token = self.credentials()
        return api_client(
            base_url,
            token,
            processes=processes,
            max_in_flight=max_in_flight,
            requests_per_second=self.requests_per_second,
        )


def api_resource(settings: Settings) -> IncomakerApi:
    """The API resource for `settings`, its token named rather than copied into the definitions.

    - the token of INCOMAKER_API_TOKEN: `EnvVar`, resolved by Dagster when a step runs;
    - the token of dlt's secrets (or none at all): unset, read by the step when it runs;
    - a token given only in code (tests and benchmarks build Settings themselves) has no variable
      or secret to name: it is passed as it is.
    """
    token = settings.api_token
    configured: str | None
    if token and token == os.environ.get(API_TOKEN_VARIABLE):
        configured = dg.EnvVar(API_TOKEN_VARIABLE)
    elif token is None or token == api_token():
        configured = None
    else:
        configured = token
    return IncomakerApi(
        base_url=settings.base_url,
        token=configured,
        requests_per_second=settings.requests_per_second,
    )


class Warehouse(dg.ConfigurableResource):
    """The DuckDB warehouse: its file, one writer at a time, readers read-only
    (incomaker_elt.orchestration.warehouse)."""

    path: str = Field(description="The working warehouse file (INCOMAKER_WAREHOUSE).")
    lock_timeout: float = Field(
        description=(
            "Seconds a step waits for another process to let go of the file "
            "(INCOMAKER_WAREHOUSE_LOCK_TIMEOUT)."
        )
    )

    def read_only(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A read-only connection, once no other process writes the file."""
        return read_only(Path(self.path), timeout=self.lock_timeout)


def warehouse_resource(settings: Settings) -> Warehouse:
    return Warehouse(
        path=str(settings.warehouse_path), lock_timeout=settings.warehouse_lock_timeout
    )
