"""The dbt project without data: generated staging in sync with the catalogue, the manifest's
sources, asset keys, schemas and documentation, and transform's error reporting."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import pytest

from incomaker_elt.contract.catalogue import load_catalogue
from incomaker_elt.contract.settings import RAW_DATASET, load_settings
from incomaker_elt.orchestration import transform

GENERATOR = "incomaker_elt.contract.staging_models"
MARTS = {
    "fct_conversions",
    "conversions_daily",
    "conversion_totals",
    "conversion_totals_by_currency",
    "rfm_contacts",
    "rfm_heatmap_rf",
    "rfm_heatmap_rm",
    "rfm_heatmap_fm",
    "rfm_distributions",
    "rfm_segments",
    "rfm_segments_vs_api",
    "rfm_contacts_vs_api",
    "fct_delivery_performance",
    "delivery_daily",
    "delivery_by_language",
    "delivery_link_clicks",
    "smartflow_daily",
    "dim_contacts",
    "dim_products",
    "dim_campaigns",
    "fct_orders",
    "fct_order_items",
    "fct_abandoned_carts",
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> dict:
    warehouse = tmp_path_factory.mktemp("parse") / "incomaker.duckdb"
    monkeypatch_module.setenv("INCOMAKER_WAREHOUSE", str(warehouse))
    path = transform.prepare_manifest()
    assert not warehouse.exists(), "parsing must not create or open the warehouse"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_generated_staging_is_in_sync_with_the_catalogue() -> None:
    result = subprocess.run(
        [sys.executable, "-m", GENERATOR, "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"staging files are stale; run `python -m {GENERATOR}`:\n{result.stdout}"
    )


def test_column_names_are_dlts_for_the_catalogue_and_for_a_field_it_does_not_know() -> None:
    """contract/column_names.json keeps dlt's names of the catalogue's fields (the check above
    finds it stale when dlt names them otherwise); a field an override adds is asked of dlt."""
    from incomaker_elt.contract import columns

    known = json.loads(columns.KNOWN_NAMES_FILE.read_text())
    assert known == {name: columns.dlt_snake(name) for name in known}
    assert known["amountWTax"] == "amount_w_tax"
    assert columns.catalogue_names(load_catalogue()) == set(known)
    assert "someFieldFromAnOverride" not in known
    assert columns.snake("someFieldFromAnOverride") == "some_field_from_an_override"
    assert columns.snake("amountWTax__raw") == columns.dlt_snake("amountWTax__raw")


def test_every_raw_table_is_a_source_with_freshness_and_a_dagster_asset_key(
    manifest: dict,
) -> None:
    sources = {s["name"]: s for s in manifest["sources"].values()}
    catalogue = load_catalogue()
    for op in catalogue:
        source = sources[op.name]
        assert source["schema"] == RAW_DATASET
        assert source["config"]["meta"]["dagster"]["asset_key"] == [RAW_DATASET, op.name]
        assert source["loaded_at_field"], op.name
        assert source["freshness"]["warn_after"]["count"], op.name
    children = {
        "order_detail__items",
        "abandoned_cart_detail__items",
        "contacts_details__segments",
        "campaign_ab_tests__variants",
        "conversions_totals__conversions__breakdown",
    }
    assert children <= set(sources)
    assert len(sources) == len(catalogue) + len(children)
    # a child table's rows arrive with its parent: it shares the parent's asset
    assert sources["order_detail__items"]["config"]["meta"]["dagster"]["asset_key"] == [
        RAW_DATASET,
        "order_detail",
    ]


def test_dagster_sees_raw_tables_as_upstream_of_staging(manifest: dict) -> None:
    from dagster_dbt import DagsterDbtTranslator

    translator = DagsterDbtTranslator()
    source = next(
        s
        for s in manifest["sources"].values()
        if s["name"] == "orders" and s["source_name"] == "incomaker_raw"
    )
    assert translator.get_asset_key(source).path == [RAW_DATASET, "orders"]
    staging = manifest["nodes"]["model.incomaker.stg_incomaker__orders"]
    assert source["unique_id"] in staging["depends_on"]["nodes"]


def test_layers_schemas_and_materialisations(manifest: dict) -> None:
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert set(models) >= MARTS
    for name, node in models.items():
        layer = node["fqn"][1]
        expected = {
            "staging": ("staging", "view"),
            "intermediate": ("intermediate", None),
            "marts": ("marts", "table"),
        }[layer]
        assert node["schema"] == expected[0], name
        if expected[1]:
            assert node["config"]["materialized"] == expected[1], name
        if layer == "staging":
            assert name.startswith("stg_incomaker__"), name
        if layer == "intermediate":
            assert name.startswith("int_") and "__" in name, name


def test_every_mart_and_column_is_described(manifest: dict) -> None:
    missing = []
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["name"] not in MARTS:
            continue
        if not node["description"].strip():
            missing.append(node["name"])
        declared = set(node["columns"])
        for column, spec in node["columns"].items():
            if not spec["description"].strip():
                missing.append(f"{node['name']}.{column}")
        selected = _final_select_columns(Path(node["original_file_path"]))
        missing += [f"{node['name']}.{c} (undocumented)" for c in selected - declared]
    assert not missing, missing


def _final_select_columns(path: Path) -> set[str]:
    """The column names of a mart's final select, read from its SQL (no database needed)."""
    sql = (transform.DBT_PROJECT_DIR / path).read_text()
    if "{{ rfm_heatmap(" in sql or "{{ conversion_totals" in sql:
        return set()  # macro-built models: checked on real data in test_marts
    tail = sql[sql.rindex("\nselect") :]
    body = tail[len("\nselect") : tail.index("\nfrom ")]
    names = set()
    depth = 0
    current = ""
    for char in body:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            names.add(_alias(current))
            current = ""
        else:
            current += char
    names.add(_alias(current))
    return names


def _alias(expression: str) -> str:
    words = expression.split()
    if len(words) >= 2 and words[-2] == "as":
        return words[-1]
    return words[-1].split(".")[-1]


def test_build_names_the_failed_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken invariant in the raw data fails the build with the model and test named."""
    warehouse = tmp_path / "incomaker.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create schema {RAW_DATASET}")
        con.execute(
            f"""
            create table {RAW_DATASET}.orders as
            select * from (values
                (1, 10, timestamptz '2026-06-01 10:00:00+00', 'CZ', 'CZK',
                 100.00, 121.00, 100.00, 121.00, 1, '1700000000.1', 'a'),
                (2, 10, timestamptz '2026-06-02 10:00:00+00', 'CZ', 'CZK',
                 200.00, 150.00, 200.00, 150.00, 1, '1700000000.1', 'b')
            ) as t(order_id, contact_id, created_at, country, currency, amount_wo_tax,
                   amount_w_tax, amount_wo_tax_reference, amount_w_tax_reference, items_count,
                   _dlt_load_id, _dlt_id)
            """
        )
    monkeypatch.setenv("INCOMAKER_WAREHOUSE", str(warehouse))
    with pytest.raises(transform.TransformError) as failure:
        transform.build(
            load_settings(),
            select=["+fct_orders"],
            extra_args=["--indirect-selection", "cautious"],
        )
    message = str(failure.value)
    names = {f.name for f in failure.value.failures}
    assert names == {n for n in names if n.startswith("incomaker_expression_is_true_fct_orders")}
    assert len(names) == 1, message
    assert f"test {names.pop()}" in message and "_fct_orders.yml" in message, message
    # the staging view read the hand-made raw table; a raw table nobody loaded reads as empty
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("select count(*) from staging.stg_incomaker__orders").fetchall() == [(2,)]


def test_the_manifest_is_parsed_again_only_when_the_project_changed() -> None:
    """prepare_manifest skips dbt parse for an unchanged project, parses after a change, and
    leaves no parse folder behind (each parse writes its own, then replaces the manifest whole)."""
    manifest = transform.prepare_manifest()
    parsed = manifest.stat().st_mtime_ns
    assert transform.prepare_manifest().stat().st_mtime_ns == parsed  # unchanged: no parse
    model = transform.DBT_PROJECT_DIR / "models" / "marts" / "conversions" / "fct_conversions.sql"
    os.utime(model)  # same text, newer file: the fingerprint moves
    assert transform.prepare_manifest().stat().st_mtime_ns > parsed
    assert json.loads(manifest.read_text())["nodes"]
    assert not list(transform.DBT_TARGET_DIR.glob(f"parse-{os.getpid()}-*"))  # ours are gone


def test_the_second_dbt_command_on_a_warehouse_reuses_the_firsts_parse(tmp_path: Path) -> None:
    """A warehouse other than the one the manifest was prepared for: its first command parses the
    whole project (its profile differs), the next reuses that parse (kept per warehouse path)."""
    transform.prepare_manifest()
    settings = dataclasses.replace(load_settings(), warehouse_path=tmp_path / "other.duckdb")

    def messages() -> dict[str, str]:
        run = transform.run_dbt(
            settings,
            ["ls", "--select", "fct_orders"],
            read=lambda invocation: list(invocation.stream_raw_events()),
        )
        assert run.error is None, run.error
        return {e.raw_event["info"]["name"]: e.raw_event["info"]["msg"] for e in run.events}

    assert "UnableToPartialParse" in messages()  # a new profile: the whole project
    said = messages()
    assert "UnableToPartialParse" not in said, said["UnableToPartialParse"]
    assert any("fct_orders" in message for message in said.values()), said


def test_a_dbt_command_reuses_the_prepared_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest is prepared with the vars and the warehouse path every dbt command passes, so
    the command parses only what changed instead of the whole project (dbt re-parses everything
    when its profile differs: ~20 s of a first `make run`)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INCOMAKER_WAREHOUSE", "warehouse/incomaker.duckdb")  # as by default
    transform.prepare_manifest()
    run = transform.run_dbt(
        load_settings(),
        ["ls", "--select", "fct_orders"],
        read=lambda invocation: list(invocation.stream_raw_events()),
    )
    assert run.error is None, run.error
    said = {event.raw_event["info"]["name"]: event.raw_event["info"]["msg"] for event in run.events}
    assert "UnableToPartialParse" not in said, said["UnableToPartialParse"]
    assert any("fct_orders" in message for message in said.values()), said


def test_dbt_builds_under_a_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The profile gives DuckDB a memory limit, INCOMAKER_DBT_MEMORY_LIMIT or 1500MB, above which
    it spills to disk instead of growing (DuckDB's own default is 80% of the RAM)."""
    monkeypatch.chdir(tmp_path)  # the default warehouse path, whose parse install prepared
    monkeypatch.setenv("INCOMAKER_WAREHOUSE", "warehouse/incomaker.duckdb")
    (tmp_path / "warehouse").mkdir()
    transform.prepare_manifest()
    run = transform.run_dbt(
        load_settings(),
        ["show", "--output", "json", "--inline", "select current_setting('memory_limit') as m"],
        read=lambda invocation: list(invocation.stream_raw_events()),
    )
    assert run.error is None, run.error
    events = [e.raw_event for e in run.events]
    (shown,) = [e["data"] for e in events if e["info"]["name"] == "ShowNode"]
    assert json.loads(shown["preview"]) == [{"m": _memory_limit("1500MB")}]


def _memory_limit(size: str) -> str:
    """How DuckDB shows a memory limit of `size` (1500MB: 1.3 GiB)."""
    with duckdb.connect(config={"memory_limit": size}) as con:
        return con.execute("select current_setting('memory_limit')").fetchone()[0]


def test_a_dbt_command_starts_no_version_check_and_opens_no_adapter_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-dbt would start `dbt --version` and open a dbt adapter over the warehouse in this
    process before each command (~4.5 s of CPU), for fetch methods we do not use."""
    import dagster_dbt.core.resource

    def no_subprocess(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError(f"dagster-dbt started {args}")

    monkeypatch.setattr(dagster_dbt.core.resource, "check_output", no_subprocess)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INCOMAKER_WAREHOUSE", "warehouse/incomaker.duckdb")
    transform.prepare_manifest()
    invocations: list[Any] = []

    def read(invocation: Any) -> list[Any]:
        invocations.append(invocation)
        return list(invocation.stream_raw_events())

    run = transform.run_dbt(load_settings(), ["ls", "--select", "fct_orders"], read=read)
    assert run.error is None, run.error
    assert [i.adapter for i in invocations] == [None]
    dbt_version = transform.installed_version(transform.dbt_executable(), "dbt-core")
    assert dbt_version is not None
    assert str(invocations[0].cli_version) == dbt_version


# ------------------------------------------------------------- dbt in an environment of its own


def _environment(root: Path, packages: dict[str, str]) -> Path:
    """A Python environment's layout with these packages' metadata and a `bin/dbt`."""
    site = root / "lib" / "python3.11" / "site-packages"
    for name, version in packages.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    executable = root / "bin" / "dbt"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    return executable


def test_the_pipeline_environment_has_no_dbt_core_and_runs_the_dbt_of_its_own() -> None:
    """dagster-dbt imports dbt-core whenever it can (a second of every definitions load): the
    pipeline's environment must not hold it (tests/test_definitions_imports.py: nor the load
    import it), and the dbt `make install` made runs the builds."""
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("dbt-core")
    executable = transform.dbt_executable()
    assert executable == transform.DBT_ENVIRONMENT_EXECUTABLE
    assert transform.installed_version(executable, "duckdb") == metadata.version("duckdb")


def test_a_dbt_of_another_duckdb_release_line_is_refused_before_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable = _environment(tmp_path / "env", {"dbt-core": "1.11.0", "duckdb": "0.9.2"})
    monkeypatch.setenv("INCOMAKER_DBT_EXECUTABLE", str(executable))
    assert transform.dbt_executable() == executable
    assert transform.dbt_core_version(executable) == "1.11.0"
    with pytest.raises(transform.TransformError) as refused:
        transform.dbt_resource()
    message = str(refused.value)
    assert str(executable) in message and "0.9.2" in message
    fix = f"{executable.with_name('python')} -m pip install duckdb=={metadata.version('duckdb')}"
    assert fix in message


def test_a_dbt_executable_setting_that_is_no_executable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from incomaker_elt.contract.settings import ConfigurationError

    monkeypatch.setenv("INCOMAKER_DBT_EXECUTABLE", str(tmp_path / "nowhere" / "dbt"))
    with pytest.raises(ConfigurationError, match="INCOMAKER_DBT_EXECUTABLE"):
        transform.dbt_executable()
