"""What loading the Dagster definitions pulls in, and how often it builds them (issue 12: the
definitions load within 2 s; bench/definitions_load.py measures it).

Loaded in a fresh Python, as a code server loads `defs`: imported, then called twice (Dagster
calls it once for the load's context and once for the repository).

- Neither the import nor the build loads the stand-in, the run history's storage, or Dagster's
  private event log storage (0.45 s CPU of an import, alembic with it): the checks and sensors
  use Dagster's public API, and import its private helpers where they run.
- Neither loads dlt (0.5 s, with sqlglot and pendulum) or pyarrow: the raw assets are described
  from the catalogue, and their steps import the loading when they run
  (orchestration/raw_loading.py). dbt-core, 1.2 s more, is not even installed beside the
  pipeline (tests/test_dbt_project.py). That holds with the API's address and token in the
  environment, as the code server gets them; without, the settings look for them in dlt's
  config and secrets.
- Nor httpx (with the rich and pygments its command line brings): the API client and the
  run-failure alert import it when they run.
- The two calls build once; a changed setting builds again.

duckdb is not on the list: the warehouse resource holds its connections (0.07 s).
"""

import json
import os
import subprocess
import sys

import pytest

from incomaker_elt.contract.settings import PROJECT_ROOT
from incomaker_elt.orchestration.transform import prepare_manifest

NEVER_LOADED = (
    "dlt",
    "pyarrow",
    "incomaker_elt.orchestration.raw_loading",
    "incomaker_elt.standin",
    "incomaker_elt.orchestration.run_history",
    "dagster._core.storage.event_log",
)
"""Modules that loading the definitions must not import."""

NEVER_BUILT = ("httpx", "httpcore")
"""Modules that building them must not import either: the API client and the alert's post take
httpx (with rich and pygments, which its command line brings) when they run."""

_LOAD = """
import json, os, sys

import incomaker_elt.orchestration.definitions as location

imported = sorted(sys.modules)
builds = []
build_definitions = location.build_definitions


def counted(*args, **kwargs):
    builds.append(1)
    return build_definitions(*args, **kwargs)


location.build_definitions = counted
first = location.defs()
second = location.defs()
after_two_calls = len(builds)
os.environ["INCOMAKER_SCHEDULE_CRON"] = "0 3 * * *"
third = location.defs()
print(json.dumps({
    "imported": imported,
    "built": sorted(sys.modules),
    "builds_for_two_calls": after_two_calls,
    "second_is_first": second is first,
    "builds_after_a_new_setting": len(builds),
    "schedule_after_a_new_setting": [s.cron_schedule for s in third.schedules],
}))
"""


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> dict:
    prepare_manifest()
    home = tmp_path_factory.mktemp("definitions_imports")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "INCOMAKER_WAREHOUSE": str(home / "warehouse" / "incomaker.duckdb"),
        "INCOMAKER_BASE_URL": "http://127.0.0.1:8765",
        "INCOMAKER_API_TOKEN": "definitions-imports",
    }
    env.pop("INCOMAKER_SCHEDULE_CRON", None)
    done = subprocess.run(
        [sys.executable, "-c", _LOAD],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for name in names if m == name or m.startswith(name + "."))


def test_importing_the_definitions_loads_none_of_them(load: dict) -> None:
    assert _loaded(load["imported"], NEVER_LOADED + NEVER_BUILT) == []


def test_building_the_definitions_loads_none_of_them(load: dict) -> None:
    assert _loaded(load["built"], NEVER_LOADED + NEVER_BUILT) == []


def test_the_code_servers_two_calls_build_once(load: dict) -> None:
    assert load["builds_for_two_calls"] == 1
    assert load["second_is_first"]


def test_a_changed_setting_builds_again(load: dict) -> None:
    assert load["builds_after_a_new_setting"] == 2
    assert load["schedule_after_a_new_setting"] == ["0 3 * * *"]


def test_the_list_names_modules_that_exist() -> None:
    """A renamed module would pass the tests above for nothing."""
    import importlib.util

    for name in NEVER_LOADED + NEVER_BUILT:
        assert importlib.util.find_spec(name) is not None, name
