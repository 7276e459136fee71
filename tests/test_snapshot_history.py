"""`history: latest`: aggregates recomputed whole every day keep only their latest snapshot in raw.

The recommendation lists are the API's model outputs over all orders, contacts and products: each
night's snapshot is the whole truth, and keeping every night's copy made raw, staging and the
serving copy grow without bound. Entries marked `history: latest` in the catalogue are loaded with
dlt's `replace` disposition through the staging dataset (`insert-from-staging`): the table is
swapped in one transaction, so a load that fails leaves the previous snapshot whole.
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from api_pages import standin_settings
from dlt.destinations.sql_jobs import SqlStagingReplaceFollowupJob

from incomaker_elt.contract.catalogue import Catalogue, CatalogueError, load_catalogue
from incomaker_elt.contract.settings import RAW_DATASET, Settings
from incomaker_elt.ingestion.pipeline import IngestionIncomplete, LoadSummary, run_ingestion
from incomaker_elt.standin import DEFAULT_TODAY, StandIn

TOKEN = "standin-token"
CATALOGUE = load_catalogue()
TABLE = "order_recommendation"
COLUMNS = "_snapshot_date, _params, order_id, rank, product_id, score"
DAY_ONE = DEFAULT_TODAY
DAY_TWO = DEFAULT_TODAY + timedelta(days=1)
MARKED_LATEST = {
    "order_recommendation",
    "contacts_recommendation",
    "products_bought_together",
    "products_recommendation",
}


def ingest(
    settings: Settings, standin: StandIn, day: date, catalogue: Catalogue = CATALOGUE
) -> LoadSummary:
    """The order recommendations as the API computes them on `day` (the stand-in's today)."""
    standin.set_today(day)
    return run_ingestion(
        settings, only=[TABLE], end=day, transport=standin.transport(), catalogue=catalogue
    )


def rows(settings: Settings) -> set[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return set(con.execute(f"select {COLUMNS} from {RAW_DATASET}.{TABLE}").fetchall())


def snapshots(settings: Settings) -> list[tuple[date, str, int]]:
    """(snapshot date, load id, rows) of the raw table, oldest first."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(
            f"select _snapshot_date, _dlt_load_id, count(*) from {RAW_DATASET}.{TABLE} "
            "group by all order by 1, 2"
        ).fetchall()


@pytest.fixture
def standin(small_world) -> StandIn:
    return StandIn(small_world, today=DAY_ONE, token=TOKEN)


def test_the_recommendation_lists_are_marked_latest_and_nothing_else() -> None:
    assert {op.name for op in CATALOGUE if op.keeps_latest_only} == MARKED_LATEST
    assert all(op.history == "all" for op in CATALOGUE if op.name not in MARKED_LATEST)


def test_a_second_day_replaces_the_snapshot_with_what_a_fresh_load_holds(
    standin: StandIn, tmp_path: Path
) -> None:
    nightly = standin_settings(tmp_path / "nightly", TOKEN)
    ingest(nightly, standin, DAY_ONE)
    first = rows(nightly)
    summary = ingest(nightly, standin, DAY_TWO)
    [(day, load_id, count)] = snapshots(nightly)
    assert day == DAY_TWO and load_id in summary.load_ids
    assert summary.table_rows[TABLE] == summary.rows_loaded[TABLE] == count
    assert summary.duplicates_removed == {}

    fresh = standin_settings(tmp_path / "fresh", TOKEN)
    ingest(fresh, standin, DAY_TWO)
    assert rows(nightly) == rows(fresh)
    assert rows(nightly) != first  # the API's answer moved on: the test can tell the days apart


def test_a_run_for_an_earlier_day_keeps_the_newer_snapshot(
    standin: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A range run of past days snapshots aggregates as of its last day: with the history kept,
    that adds an older snapshot; here it would replace the newer one, so it is skipped."""
    settings = standin_settings(tmp_path, TOKEN)
    ingest(settings, standin, DAY_TWO)
    kept = snapshots(settings)
    standin.clear_log()
    summary = ingest(settings, standin, DAY_ONE)
    assert snapshots(settings) == kept
    assert TABLE not in summary.loaded_operations
    assert not [r for r in standin.request_log if r.path == CATALOGUE.get(TABLE).path]
    assert f"{TABLE}: kept the warehouse's snapshot as of {DAY_TWO}" in caplog.text


def test_an_override_keeps_the_history(standin: StandIn, tmp_path: Path) -> None:
    override = tmp_path / "keep-history.yaml"
    override.write_text(f"operations:\n  {TABLE}:\n    history: all\n")
    catalogue = load_catalogue(override)
    assert not catalogue.get(TABLE).keeps_latest_only
    settings = dataclasses.replace(standin_settings(tmp_path, TOKEN), catalogue_overrides=override)
    one = ingest(settings, standin, DAY_ONE, catalogue).rows_loaded[TABLE]
    two = ingest(settings, standin, DAY_TWO, catalogue).rows_loaded[TABLE]
    assert [(day, count) for day, _, count in snapshots(settings)] == [
        (DAY_ONE, one),
        (DAY_TWO, two),
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "operations:\n  campaigns:\n    history: latest\n",
            "entry 'campaigns': history: latest applies only to kind: aggregate, not 'entity'",
        ),
        (
            "operations:\n  abandoned_carts:\n    history: latest\n",
            "entry 'abandoned_carts': history: latest applies only to kind: aggregate, not 'event'",
        ),
        (
            "operations:\n  campaign_link_clicks:\n    history: latest\n",
            "entry 'campaign_link_clicks': history: latest needs an aggregate every run fetches "
            "whole, but it has a parent",
        ),
        (
            "operations:\n  products_recommendation:\n    window: productId\n",
            "entry 'products_recommendation': history: latest needs an aggregate every run "
            "fetches whole, but it has a window \\('productId'\\)",
        ),
        (
            f"operations:\n  {TABLE}:\n    history: newest\n",
            f"entry '{TABLE}': history must be one of \\('all', 'latest'\\), not 'newest'",
        ),
    ],
)
def test_history_latest_where_it_cannot_hold_is_an_error_naming_the_entry(
    tmp_path: Path, override: str, message: str
) -> None:
    path = tmp_path / "override.yaml"
    path.write_text(override)
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(path)


def test_a_failed_replace_leaves_the_previous_snapshot_and_the_next_run_replaces_it(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = standin_settings(tmp_path, TOKEN)
    ingest(settings, standin, DAY_ONE)
    before, kept = rows(settings), snapshots(settings)

    # The warehouse fails inside the swap: after the table was emptied and the new snapshot
    # inserted, before the transaction commits.
    generate_sql = SqlStagingReplaceFollowupJob.generate_sql.__func__  # type: ignore[attr-defined]

    def failing_swap(cls, table_chain, sql_client):  # noqa: ANN001, ANN202
        return [*generate_sql(cls, table_chain, sql_client), "select error('the disk is full')"]

    monkeypatch.setattr(SqlStagingReplaceFollowupJob, "generate_sql", classmethod(failing_swap))
    with pytest.raises(IngestionIncomplete) as failure:
        ingest(settings, standin, DAY_TWO)
    [failed] = failure.value.summary.failures
    assert failed.operations == (TABLE,) and failed.step == "load"
    assert "the disk is full" in failed.reason and failed.committed == {}
    assert snapshots(settings) == kept and rows(settings) == before

    monkeypatch.undo()
    summary = ingest(settings, standin, DAY_TWO)
    [(day, _, count)] = snapshots(settings)
    assert day == DAY_TWO and count == summary.table_rows[TABLE]
    assert rows(settings) != before
