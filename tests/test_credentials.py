"""The API address and token have one reader (incomaker_elt.contract.settings.api_address and
api_token): the environment first, then dlt's `.dlt/config.toml` and `.dlt/secrets.toml`. Every
stage takes them from there: ingestion, the reconciliation checks, the probe and the choice of
`incomaker-elt run` between the configured API and the stand-in. The token never shows: not in a
repr, not in the definitions the Dagster UI shows, not in the run's log or record.

The long test is the issue's done-when in short: with the address in `.dlt/config.toml` and the
token in `.dlt/secrets.toml` of the working directory, and neither in the environment,
`incomaker-elt run` loads from the API those files name and its reconciliation check agrees with
that API. Before, the raw tables loaded (ingestion read dlt's files) and every reconciliation
check failed with "no API address" (it read the environment only).
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import (
    RepositorySnap,
    ResourceConfigEnvVarSnap,
)
from dagster_shared.serdes import serialize_value

from incomaker_elt.contract.settings import PROJECT_ROOT, Settings
from incomaker_elt.orchestration.resources import IncomakerApi
from incomaker_elt.orchestration.transform import prepare_manifest
from incomaker_elt.standin import DEFAULT_TODAY, StandIn

TOKEN = "dlt-secrets-token-7d1c0f"
ENV_TOKEN = "environment-token-52be9a"
RFM_CHECK = dg.AssetCheckKey(dg.AssetKey(["marts", "rfm_contacts"]), "rfm_cells_match_api")
RFM_SELECTION = [
    "incomaker_raw/orders",
    "staging/stg_incomaker__orders",
    "intermediate/int_rfm__window_resolved",
    "intermediate/int_rfm__contacts_aggregated",
    "intermediate/int_rfm__contacts_scored",
    "marts/rfm_contacts",
]
"""The orders and the RFM models up to the mart that rfm_cells_match_api reconciles."""
RFM_FIRST_DAY = "2025-07-01"
"""The RFM window is the 365 days up to the latest order (the stand-in's today, 2026-06-30): the
check compares only once every order of the window is loaded."""


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without any pipeline setting or dlt source value."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("INCOMAKER_", "SOURCES__", "DAGSTER_", "DLT_"))
    }
    return {**env, **extra}


def _dlt_files(folder: Path, base_url: str, token: str) -> Path:
    """`.dlt/config.toml` with the address and `.dlt/secrets.toml` with the token, as dlt
    documents them."""
    dlt_dir = folder / ".dlt"
    dlt_dir.mkdir(parents=True)
    (dlt_dir / "config.toml").write_text(f'[sources.incomaker]\nbase_url = "{base_url}"\n')
    (dlt_dir / "secrets.toml").write_text(f'[sources.incomaker]\napi_token = "{token}"\n')
    return folder


_SETTINGS_SCRIPT = """
import json
from incomaker_elt.contract.settings import load_settings
s = load_settings()
print(json.dumps({"base_url": s.base_url, "token": s.api_token, "repr": repr(s),
                  "rate": s.requests_per_second}))
"""


def _settings_in(folder: Path, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _SETTINGS_SCRIPT],
        cwd=folder,
        env=_environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_address_and_token_come_from_dlts_files_unless_the_environment_has_them(
    tmp_path: Path,
) -> None:
    folder = _dlt_files(tmp_path, "https://api.example.com/v1", TOKEN)
    from_files = _settings_in(folder)
    assert from_files["base_url"] == "https://api.example.com/v1"
    assert from_files["token"] == TOKEN
    assert TOKEN not in from_files["repr"]
    assert from_files["rate"] == 10.0  # a remote API with a token: the polite default

    from_environment = _settings_in(
        folder, INCOMAKER_BASE_URL="http://127.0.0.1:9", INCOMAKER_API_TOKEN=ENV_TOKEN
    )
    assert from_environment["base_url"] == "http://127.0.0.1:9"
    assert from_environment["token"] == ENV_TOKEN
    assert from_environment["rate"] is None  # an API on this machine: no cap


# ------------------------------------------------------------- what the Dagster UI shows


def _settings(root: Path, token: str) -> Settings:
    return Settings(
        warehouse_path=root / "warehouse" / "incomaker.duckdb",
        base_url="https://api.example.com/v1",
        api_token=token,
        catalogue_overrides=None,
        dagster_home=root / "dagster_home",
    )


@pytest.fixture(scope="module")
def manifest() -> None:
    prepare_manifest()  # the definitions read dbt's manifest


@pytest.mark.parametrize("where", ["environment", "dlt secrets"])
def test_the_ui_shows_the_api_configuration_but_never_the_token(
    manifest: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from incomaker_elt.orchestration.definitions import build_definitions

    monkeypatch.delenv("INCOMAKER_API_TOKEN", raising=False)
    if where == "environment":
        monkeypatch.setenv("INCOMAKER_API_TOKEN", TOKEN)
    else:  # dlt's own environment name of api_token under [sources.incomaker]: its secrets
        monkeypatch.setenv("SOURCES__INCOMAKER__API_TOKEN", TOKEN)
    defs = build_definitions(_settings(tmp_path, TOKEN))

    snapshot = RepositorySnap.from_def(defs.get_repository_def())
    assert TOKEN not in serialize_value(snapshot)  # every page of the UI reads this snapshot
    shown = {resource.name: resource.configured_values for resource in snapshot.resources}
    assert shown["incomaker_api"]["base_url"] == '"https://api.example.com/v1"'
    assert shown["warehouse"]["path"] == json.dumps(str(tmp_path / "warehouse/incomaker.duckdb"))
    if where == "environment":
        assert shown["incomaker_api"]["token"] == ResourceConfigEnvVarSnap(
            name="INCOMAKER_API_TOKEN"
        )
    else:
        assert shown["incomaker_api"]["token"] == "null"  # read by the step when it runs

    api = defs.resources["incomaker_api"]
    assert isinstance(api, IncomakerApi) and TOKEN not in repr(api)
    with dg.build_resources({"incomaker_api": api}) as resources:  # as a step gets it
        assert resources.incomaker_api.credentials() == ("https://api.example.com/v1", TOKEN)


def test_a_run_against_the_standin_hands_its_address_over_and_names_its_token(
    manifest: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`incomaker-elt run` without a token: the stand-in's address and today reach the
    definitions as values; its one-off token goes by INCOMAKER_API_TOKEN, so the run's record
    names the variable instead of holding the token."""
    from incomaker_elt.orchestration.definitions import build_definitions
    from incomaker_elt.run import StandInProcess, against_standin

    monkeypatch.setenv("INCOMAKER_API_TOKEN", "")  # so that the test leaves it as it found it
    standin = StandInProcess(
        process=None,  # type: ignore[arg-type]  # only its address, token and today are read
        base_url="http://127.0.0.1:8799",
        token=TOKEN,
        today=DEFAULT_TODAY,
    )
    settings = against_standin(_settings(tmp_path, None), standin)
    assert (settings.base_url, settings.api_token) == ("http://127.0.0.1:8799", TOKEN)
    assert settings.source_today == DEFAULT_TODAY and settings.requests_per_second is None

    snapshot = RepositorySnap.from_def(build_definitions(settings).get_repository_def())
    assert TOKEN not in serialize_value(snapshot)
    shown = {resource.name: resource.configured_values for resource in snapshot.resources}
    assert shown["incomaker_api"] == {
        "base_url": '"http://127.0.0.1:8799"',
        "requests_per_second": "null",
        "token": ResourceConfigEnvVarSnap(name="INCOMAKER_API_TOKEN"),
    }


# ------------------------------------------------------------ a run with dlt's files only


@pytest.fixture(scope="module")
def standin(small_world) -> Iterator[str]:
    with StandIn(small_world, token=TOKEN).serve(host="127.0.0.1", port=0) as base_url:
        yield base_url


def test_a_run_with_the_token_in_dlt_secrets_loads_and_reconciles(
    standin: str, tmp_path: Path
) -> None:
    folder = _dlt_files(tmp_path / "work", standin, TOKEN)
    home = tmp_path / "dagster_home"
    env = _environment(
        INCOMAKER_WAREHOUSE=str(tmp_path / "warehouse" / "incomaker.duckdb"),
        DAGSTER_HOME=str(home),
        INCOMAKER_SOURCE_TODAY=DEFAULT_TODAY.isoformat(),
        INCOMAKER_PARTITIONS_START=RFM_FIRST_DAY,
        # Only the models selected: dbt's default (eager) would also run the mart's tests that
        # reach dim_contacts, which this part of the job does not build.
        DBT_INDIRECT_SELECTION="cautious",
    )
    command = [str(Path(sys.executable).parent / "incomaker-elt"), "run", "--select"]
    done = subprocess.run(
        [*command, *RFM_SELECTION],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # The token in .dlt/secrets.toml was found: no stand-in of its own, the API the files name.
    assert f"the Incomaker API at {standin}" in done.stdout, output[-3000:]
    assert "starting the stand-in" not in output

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.event_log_storage.get_asset_check_execution_history(RFM_CHECK, limit=1)
        assert records, "rfm_cells_match_api did not run"
        evaluation = records[0].event.dagster_event.asset_check_evaluation_data
        assert evaluation.passed, evaluation.metadata
        assert evaluation.metadata["contacts"].value > 0  # compared with the API, not warned
        orders = instance.get_latest_materialization_event(dg.AssetKey(["incomaker_raw", "orders"]))
        assert (
            orders is not None
            and orders.asset_materialization.metadata["dagster/row_count"].value > 0
        )
        # The run's record, which the UI shows: its configuration and its job's snapshot (with
        # the resources' configured values as defaults; stored compressed, so asked for here).
        (run,) = instance.get_runs(limit=1)
        stored = serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        assert '"base_url\\": \\"' + standin in stored  # the address is shown
        assert TOKEN not in stored and TOKEN not in json.dumps(run.run_config)

    # Nowhere the UI or a reader looks: the run's log, its record, the console.
    logs = list((home / "run-logs").glob("run-*.log"))
    assert len(logs) == 1 and "rfm_cells_match_api" in logs[0].read_text()
    stored = [path for path in home.rglob("*") if path.is_file()]
    assert not [path for path in stored if TOKEN.encode() in path.read_bytes()]
    assert TOKEN not in output
    assert PROJECT_ROOT not in folder.parents  # dlt read the files of the run's own folder
