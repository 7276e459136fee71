"""What the raw assets tell in the Dagster UI: columns described from the catalogue, and each
day's own row count when several daily partitions are loaded in one run."""

import dataclasses
from collections import defaultdict

import dagster as dg
import duckdb
import pytest
from api_pages import standin_settings

from incomaker_elt.contract.catalogue import load_catalogue
from incomaker_elt.ingestion.raw_columns import column_hints, nested_hints
from incomaker_elt.orchestration.raw_metadata import catalogue_columns
from incomaker_elt.standin import StandIn

CATALOGUE = load_catalogue()
TOKEN = "standin-token"
DAYS = ("2026-06-10", "2026-06-11", "2026-06-12")


def _raw(name: str) -> dg.AssetKey:
    return dg.AssetKey(["incomaker_raw", name])


@pytest.fixture(scope="module")
def raw_assets(tmp_path_factory: pytest.TempPathFactory):
    from incomaker_elt.orchestration.ingestion_assets import build_raw_assets
    from incomaker_elt.orchestration.partitions import daily_partitions

    settings = standin_settings(tmp_path_factory.mktemp("raw_metadata"), TOKEN)
    return settings, build_raw_assets(settings, CATALOGUE, daily_partitions(settings))


# ----------------------------------------------------------------------- the column schema


def test_every_raw_asset_describes_each_column_of_its_table_and_child_tables(raw_assets) -> None:
    _, (events, snapshots) = raw_assets
    specs = {spec.key: spec for assets in (events, snapshots) for spec in assets.specs}
    for op in CATALOGUE:
        spec = specs[_raw(op.name)]
        schema = spec.metadata["dagster/column_schema"]
        names = [column.name for column in schema.columns]
        # The table's columns are the ingestion's own column hints, child tables' as dlt names them.
        assert set(column_hints(op)) <= set(names), op.name
        for (path,), hints in nested_hints(op).items():
            assert {f"{op.name}__{path}.{c}" for c in hints["columns"]} <= set(names), op.name
        undescribed = [c.name for c in schema.columns if not c.description]
        assert undescribed == [], op.name
        assert op.path in spec.description and op.title in spec.description, op.name


def test_a_column_says_its_api_name_type_and_role() -> None:
    orders = {c.name: c for c in catalogue_columns(CATALOGUE.get("orders"), CATALOGUE)["orders"]}
    assert orders["created_at"].type == "timestamp with time zone"
    assert "`createdAt`" in orders["created_at"].description
    assert "dateFrom/dateTo" in orders["created_at"].description
    assert "primary key" in orders["order_id"].description
    assert not orders["order_id"].nullable
    detail = catalogue_columns(CATALOGUE.get("order_detail"), CATALOGUE)
    items = {c.name: c for c in detail["order_detail__items"]}
    assert "`items[]." in items["quantity"].description
    assert {"_dlt_parent_id", "_dlt_list_idx"} <= set(items)


# ------------------------------------------------------------------------ rows per day


WANTED = ("orders", "conversions", "order_detail")


@pytest.fixture(scope="module")
def range_run(raw_assets, small_world):
    """One run over three daily partitions of three tables, as a UI backfill of a range runs."""
    from incomaker_elt.orchestration.ingestion_assets import build_raw_assets
    from incomaker_elt.orchestration.partitions import daily_partitions
    from incomaker_elt.orchestration.resources import api_resource
    from incomaker_elt.orchestration.schedules import partition_range_tags

    settings, _ = raw_assets
    service = StandIn(small_world, token=TOKEN)
    with service.serve(host="127.0.0.1", port=0) as base_url:
        settings = dataclasses.replace(settings, base_url=base_url)
        events, _ = build_raw_assets(settings, CATALOGUE, daily_partitions(settings))
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize(
                [events],
                selection=[_raw(name) for name in WANTED],
                resources={"incomaker_api": api_resource(settings)},
                instance=instance,
                tags=partition_range_tags(DAYS[0], DAYS[-1]),
            )
    assert result.success
    return settings, result


def test_a_range_run_records_each_days_own_row_count(range_run) -> None:
    settings, result = range_run
    recorded: dict[str, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        metadata = materialization.metadata
        table = materialization.asset_key.path[-1]
        recorded[table][materialization.partition] = metadata["dagster/partition_row_count"].value
        totals[table] = metadata["dagster/row_count"].value
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        expected = {
            "orders": _per_day(con, "orders", "cast(timezone('UTC', created_at) as date)"),
            "conversions": _per_day(con, "conversions", "date"),
            "order_detail": _per_day(
                con, "order_detail", "cast(timezone('UTC', created_at) as date)"
            ),
        }
    finally:
        con.close()
    for table in WANTED:
        assert recorded[table] == expected[table], table
        assert sum(recorded[table].values()) == totals[table], table  # only these days loaded
    # Not the window's total on each day: the days differ (the stand-in's days are not equal).
    assert len(set(recorded["orders"].values())) > 1, recorded


def test_the_described_columns_are_the_ones_the_load_writes(range_run) -> None:
    """Every column the catalogue schema names exists, in the table dlt wrote (children too)."""
    settings, _ = range_run
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        written: dict[str, set[str]] = defaultdict(set)
        for table, column in con.execute(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = 'incomaker_raw'"
        ).fetchall():
            written[table].add(column)
    finally:
        con.close()
    for name in WANTED:
        for table, columns in catalogue_columns(CATALOGUE.get(name), CATALOGUE).items():
            assert {c.name for c in columns} <= written[table], table


def _per_day(con: duckdb.DuckDBPyConnection, table: str, day: str) -> dict[str, int]:
    rows = con.execute(
        f"select {day}, count(*) from incomaker_raw.{table} group by 1"  # noqa: S608
    ).fetchall()
    counts = {str(d): n for d, n in rows}
    return {d: counts.get(d, 0) for d in DAYS}


def test_materialisation_column_schema_keeps_the_catalogues_descriptions() -> None:
    from incomaker_elt.orchestration.raw_metadata import column_schema

    op = CATALOGUE.get("orders")
    warehouse = {
        "orders": [("order_id", "BIGINT", False), ("created_at__raw", "VARCHAR", True)],
    }
    schema = column_schema(op, CATALOGUE, warehouse)
    columns = {c.name: c for c in schema.columns}
    assert columns["order_id"].type == "bigint"
    assert "`orderId`" in (columns["order_id"].description or "")
    assert "did not fit" in (columns["created_at__raw"].description or "")
