"""A week of incremental runs leaves the warehouse a fresh full load would build.

A warehouse is loaded whole a week before TODAY, then the stand-in's today moves a week on to
TODAY and the same warehouse gets an ordinary incremental run and `dbt run`. The other warehouse
is loaded whole at TODAY: the session's fresh full load (tests/conftest.py `full_load`, read
only). Every mart and every staging model (its current rows: latest snapshots of aggregates)
must be row-for-row the same in both (tests/warehouse_compare.py). `dbt run` on the incremental
one: the data tests are test_marts.py's business, this one is about what the models hold.

What this guards: a week moves every contact's recency, so RFM answers change for contacts that
did not change; RFM cells empty and disappear; recommendations are recomputed for old orders. Any
of them left stale by an incremental run shows up here as rows only one warehouse has.
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path

import pytest
from warehouse_compare import LOAD_COLUMNS, SNAPSHOT_COLUMNS, compare_warehouses, describe

from incomaker_elt.contract.settings import Settings, load_settings
from incomaker_elt.ingestion.pipeline import run_ingestion
from incomaker_elt.orchestration import transform
from incomaker_elt.standin import StandIn

TOKEN = "standin-token"
HISTORY_START = date(2025, 1, 1)
TODAY = date(2026, 6, 30)
"""The shared full load's today (the stand-in's default)."""
A_WEEK_EARLIER = TODAY - timedelta(days=7)


def _settings(folder: Path) -> Settings:
    return dataclasses.replace(
        load_settings(),
        warehouse_path=folder / "incomaker.duckdb",
        base_url=None,
        api_token=TOKEN,
        dlt_destination=None,
    )


@pytest.fixture(scope="module")
def warehouses(
    small_world, full_load, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(incremental, full): loaded a week before TODAY then at TODAY, and loaded at TODAY."""
    assert (full_load.today, full_load.start) == (TODAY, HISTORY_START)
    root = tmp_path_factory.mktemp("incremental_vs_full")
    incremental = _settings(root / "incremental")
    standin = StandIn(small_world, today=A_WEEK_EARLIER, token=TOKEN)
    first = run_ingestion(
        incremental, start=HISTORY_START, end=A_WEEK_EARLIER, transport=standin.transport()
    )
    standin.set_today(TODAY)
    later = run_ingestion(
        incremental, start=HISTORY_START, end=TODAY, transport=standin.transport()
    )
    transform.build(incremental, command="run")
    # The later run is incremental, not a disguised full load (the first one was a full load).
    assert later.requests < first.requests / 2, (later.requests, first.requests)
    assert later.requests < full_load.ingestion.requests / 2
    return incremental.warehouse_path, full_load.warehouse


RFM_DETAIL = "staging.stg_incomaker__rfm_contact_detail"
AS_OF = ("analysis_date", "recency_days")
"""The RFM detail is asked for again only for contacts whose RFM changed (catalogue:
`days_before_today`): the others keep the detail of the day it was last asked for, whose analysis
date and recency count from that day (dbt_project/DECISIONS.md, "Current rows")."""


def test_every_mart_and_staging_model_equals_a_fresh_full_load(warehouses) -> None:
    incremental, full = warehouses
    differences = compare_warehouses(incremental, full, schemas=("marts", "staging"))
    assert not [d for d in differences if d.relation != RFM_DETAIL], describe(differences)
    detail = compare_warehouses(
        incremental,
        full,
        relations=[RFM_DETAIL],
        ignore_columns=(*LOAD_COLUMNS, *SNAPSHOT_COLUMNS, *AS_OF),
    )
    assert not detail, describe(detail)


def test_the_rfm_detail_not_asked_again_points_at_the_same_last_order_day(warehouses) -> None:
    """Where the two details' analysis dates differ, the day recency counts back to is the same:
    only today moved on for those contacts."""
    import duckdb

    incremental, full = warehouses
    with duckdb.connect() as con:
        con.execute(f"attach '{incremental}' as incremental (read_only)")
        con.execute(f"attach '{full}' as fresh (read_only)")
        older, differing = con.execute(
            f"""
            select
                count(*) filter (where i.analysis_date < f.analysis_date),
                count(*) filter (where i.analysis_date - i.recency_days::int
                                 is distinct from f.analysis_date - f.recency_days::int)
            from incremental.{RFM_DETAIL} as i
            inner join fresh.{RFM_DETAIL} as f using (contact_id)
            """
        ).fetchone()
    assert older > 100 and differing == 0, (older, differing)


def test_the_comparison_sees_the_rfm_contact_comparison(warehouses) -> None:
    """The week's moving recencies reach the marts: the comparison is not vacuous."""
    import duckdb

    incremental, _ = warehouses
    with duckdb.connect(str(incremental), read_only=True) as con:
        compared, dates = con.execute(
            "select count(*), count(distinct analysis_date) from marts.rfm_contacts_vs_api "
            "inner join marts.rfm_contacts using (contact_id)"
        ).fetchone()
    assert compared > 500 and dates == 1
