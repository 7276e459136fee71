"""Nothing bricks the warehouse: backfills, values that cannot be stored, refused operations and a
process killed in the middle of dlt's load step.

Every test runs the real pipeline (the stand-in in-process, or over a socket for the CLI) into a
throwaway DuckDB file, and checks the warehouse itself: exact row counts, one copy of every row,
no child row without its parent, no load package left to block the next run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import dlt
import duckdb
import orjson
import pytest
from api_pages import standin_settings
from killed_runs import ingest_killed_after

from incomaker_elt.contract.catalogue import Operation, default_catalogue
from incomaker_elt.contract.settings import RAW_DATASET, Settings
from incomaker_elt.ingestion.client import IncomakerClient
from incomaker_elt.ingestion.fetch import Fetcher
from incomaker_elt.ingestion.pipeline import (
    PIPELINE_NAME,
    IngestionIncomplete,
    configure_dlt,
    load_families,
    make_pipeline,
    run_ingestion,
)
from incomaker_elt.ingestion.raw_columns import has_nested_lists, primary_key
from incomaker_elt.ingestion.source import RunDates, incomaker_source, with_ancestors
from incomaker_elt.orchestration.ingestion_assets import partitioned_operations
from incomaker_elt.standin import DEFAULT_TODAY, StandIn
from incomaker_elt.standin.service import Reply

CATALOGUE = default_catalogue()
TOKEN = "standin-token"
JUNE = date(2026, 6, 1)


# ------------------------------------------------------------------ helpers


def settings_for(tmp: Path) -> Settings:
    return standin_settings(tmp, TOKEN)


def raw_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "select table_name from information_schema.tables where table_schema = ? "
        "and table_name not like '\\_dlt%' escape '\\' order by 1",
        [RAW_DATASET],
    ).fetchall()
    return [name for (name,) in rows]


def counts(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            t: con.execute(f'select count(*) from {RAW_DATASET}."{t}"').fetchone()[0]
            for t in raw_tables(con)
        }


def integrity_problems(warehouse: Path) -> dict[str, str]:
    """Rows repeated (same `_dlt_id`, or a merge key twice) and child rows without a parent."""
    problems: dict[str, str] = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = set(raw_tables(con))
        for table in sorted(tables):
            name = f'{RAW_DATASET}."{table}"'
            total, ids = con.execute(
                f"select count(*), count(distinct _dlt_id) from {name}"
            ).fetchone()
            if total != ids:
                problems[table] = f"{total - ids} rows repeat a _dlt_id"
            parent = table.rsplit("__", 1)[0]
            columns = {r[0] for r in con.execute(f"describe {name}").fetchall()}
            if "_dlt_parent_id" in columns and parent in tables:
                (orphans,) = con.execute(
                    f"select count(*) from {name} c where not exists (select 1 from "
                    f'{RAW_DATASET}."{parent}" p where p._dlt_id = c._dlt_parent_id)'
                ).fetchone()
                if orphans:
                    problems[table] = f"{orphans} child rows without a parent"
        for op in CATALOGUE:
            if op.name not in tables or not op.primary_key:
                continue
            keys = ", ".join(primary_key(op))
            total, distinct = con.execute(
                f'select count(*), count(distinct ({keys})) from {RAW_DATASET}."{op.name}"'
            ).fetchone()
            if total != distinct:
                problems[op.name] = f"{total - distinct} rows repeat a merge key"
    return problems


def written(warehouse: Path, load_ids: list[str], tables: Iterable[str]) -> dict[str, int]:
    """Rows of these loads in each table (child rows through their root row)."""
    loads = ", ".join(f"'{load_id}'" for load_id in load_ids)
    found: dict[str, int] = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        existing = raw_tables(con)
        for root in tables:
            for table in [t for t in existing if t == root or t.startswith(f"{root}__")]:
                where = f"_dlt_load_id in ({loads})"
                if table != root:
                    roots = f'select _dlt_id from {RAW_DATASET}."{root}" where {where}'
                    where = f"_dlt_root_id in ({roots})"
                (rows,) = con.execute(
                    f'select count(*) from {RAW_DATASET}."{table}" where {where}'
                ).fetchone()
                if rows:
                    found[table] = rows
    return found


def pending_packages(settings: Settings) -> list[str]:
    pipeline = dlt.attach(PIPELINE_NAME, pipelines_dir=str(settings.dlt_working_dir))
    return [*pipeline.list_extracted_load_packages(), *pipeline.list_normalized_load_packages()]


def child_columns(warehouse: Path) -> dict[str, list[tuple[str, str, str]]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            t: [r[:3] for r in con.execute(f'describe {RAW_DATASET}."{t}"').fetchall()]
            for t in raw_tables(con)
            if "__" in t
        }


def windows_asked(standin: StandIn, path: str) -> set[str | None]:
    return {r.params.get("dateFrom") for r in standin.request_log.snapshot() if r.path == path}


class Refusing(StandIn):
    """The stand-in, except that the operations named answer 404 to every request."""

    def __init__(self, *args: Any, refused: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = {CATALOGUE.get(name).path for name in refused}

    def handle(self, method: str, path: str, query: Any, headers: Mapping[str, str]) -> Reply:
        if path in self.refused:
            body = orjson.dumps({"error": f"no such operation at {path}"})
            return Reply(404, body, {})
        return super().handle(method, path, query, headers)


# ------------------------------------------------------------------ 1. backfills


def test_a_backfill_of_past_days_never_alters_existing_child_tables(small_world, tmp_path):
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)
    nested = ["campaign_ab_tests", "contacts_details", "order_detail"]
    run_ingestion(
        settings, only=nested, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport()
    )
    before, columns = counts(settings.warehouse_path), child_columns(settings.warehouse_path)
    children = ("campaign_ab_tests__variants", "contacts_details__segments", "order_detail__items")
    assert all(before[child] > 0 for child in children)

    # Three past days of the CLI: the A/B tests of those days are none (an empty window).
    summary = run_ingestion(
        settings,
        only=nested,
        start=date(2026, 6, 10),
        end=date(2026, 6, 12),
        transport=standin.transport(),
    )
    assert summary.failures == []
    # Three past days of the Dagster events asset: fixed windows, dlt's backfill.
    configure_dlt()
    pipeline = make_pipeline(settings)
    dates = RunDates(date(2026, 6, 10), date(2026, 6, 12), fixed=True)
    events = with_ancestors(
        CATALOGUE, [op for op in partitioned_operations(CATALOGUE) if has_nested_lists(op)]
    )
    client = IncomakerClient("http://standin", TOKEN, transport=standin.transport())
    fetcher = Fetcher(client, page_size=CATALOGUE.page_size, concurrency=4)

    def fixed(family: Iterable[Operation], first_loads: frozenset[str]) -> Any:
        return incomaker_source(CATALOGUE, fetcher, dates, list(family), first_loads=first_loads)

    try:
        outcome = load_families(pipeline, CATALOGUE, events, fixed)
    finally:
        fetcher.close()
        client.close()
    assert outcome.failures == []

    # The child tables kept their columns and constraints; the next ordinary run still loads.
    after = child_columns(settings.warehouse_path)
    assert {t: after[t] for t in columns} == columns
    run_ingestion(
        settings, only=nested, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport()
    )
    assert pending_packages(settings) == []
    assert {t: n for t, n in counts(settings.warehouse_path).items() if t in before} == before
    assert integrity_problems(settings.warehouse_path) == {}


# ------------------------------------------------------------------ 4. one bad operation


def test_operations_the_api_refuses_fail_alone_and_keep_their_cursors(small_world, tmp_path):
    refused = ["campaign_ab_tests", "contacts_details"]  # a listing, and a per-id operation
    standin = Refusing(small_world, token=TOKEN, refused=refused)
    settings = settings_for(tmp_path)
    only = ["orders", *refused]
    with pytest.raises(IngestionIncomplete) as failure:
        run_ingestion(
            settings, only=only, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport()
        )
    summary = failure.value.summary
    # A per-id operation fails with the listing that feeds it: one family, one failure.
    assert {f.operations for f in summary.failures} == {
        ("campaign_ab_tests",),
        ("contacts", "contacts_details"),
    }
    assert all("404" in f.reason and f.step == "fetch" for f in summary.failures)
    assert "campaign_ab_tests" in str(failure.value) and "orders" in str(failure.value)
    loaded = counts(settings.warehouse_path)
    assert loaded["orders"] == summary.rows_loaded["orders"] > 0
    assert not {"campaign_ab_tests", "contacts", "contacts_details"} & set(loaded)
    assert pending_packages(settings) == []

    # Once the API answers, the failed operations start where they were: their cursors never
    # moved. The orders continue from theirs (minus the lookback), so they ask a later window.
    healthy = StandIn(small_world, token=TOKEN)
    summary = run_ingestion(
        settings, only=only, start=JUNE, end=DEFAULT_TODAY, transport=healthy.transport()
    )
    assert summary.failures == []
    assert windows_asked(healthy, "/campaigns/ab-tests") == {JUNE.isoformat()}
    assert windows_asked(healthy, "/contacts") == {JUNE.isoformat()}
    assert windows_asked(healthy, "/orders") != {JUNE.isoformat()}
    assert counts(settings.warehouse_path)["contacts_details"] > 0
    assert integrity_problems(settings.warehouse_path) == {}


def test_a_table_that_cannot_store_a_value_fails_alone_and_blocks_no_later_run(
    small_world, tmp_path
):
    standin = StandIn(small_world, token=TOKEN)
    settings = settings_for(tmp_path)
    only = ["orders", "campaign_ab_tests"]
    run_ingestion(settings, only=only, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport())
    # The warehouse's orders can no longer hold the amounts the API sends (DECIMAL(5,2)).
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(f"create temp table kept as select * from {RAW_DATASET}.orders")
        con.execute(f"delete from {RAW_DATASET}.orders")
        con.execute("checkpoint")
        con.execute(f"alter table {RAW_DATASET}.orders alter amount_w_tax type decimal(5, 2)")
        con.execute(
            f"insert into {RAW_DATASET}.orders select * from kept where amount_w_tax < 1000"
        )
    kept = counts(settings.warehouse_path)["orders"]
    standin.clear_log()

    with pytest.raises(IngestionIncomplete) as failure:
        run_ingestion(
            settings, only=only, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport()
        )
    summary = failure.value.summary
    [failed] = summary.failures
    assert failed.operations[0] == "orders" and failed.step == "load"  # with what it feeds
    assert "DECIMAL(5,2)" in failed.reason
    # The message says truthfully what was written: nothing of the orders (their merge failed
    # before it changed the table), and whatever else of the package is in the warehouse.
    assert failed.load_ids and "orders" not in failed.committed
    assert written(settings.warehouse_path, failed.load_ids, failed.operations) == failed.committed
    message = str(failure.value)
    assert ("rows already written" in message) == bool(failed.committed)
    assert all(table in message for table in failed.committed)
    assert summary.rows_loaded["campaign_ab_tests"] > 0
    assert counts(settings.warehouse_path)["orders"] == kept
    assert pending_packages(settings) == []
    failed_window = windows_asked(standin, "/orders")

    # What the old pipeline left after such a failure: a package extracted and normalised but
    # not loadable. The next run drops it (and says so) instead of failing on it for ever.
    configure_dlt()
    pipeline = make_pipeline(settings)
    client = IncomakerClient("http://standin", TOKEN, transport=standin.transport())
    fetcher = Fetcher(client, page_size=CATALOGUE.page_size, concurrency=4)
    try:
        dates = RunDates(JUNE, DEFAULT_TODAY)
        pipeline.extract(incomaker_source(CATALOGUE, fetcher, dates, [CATALOGUE.get("orders")]))
        pipeline.normalize()
    finally:
        fetcher.close()
        client.close()
    [stuck] = pending_packages(settings)
    with pytest.raises(IngestionIncomplete) as failure:
        run_ingestion(
            settings, only=only, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport()
        )
    summary = failure.value.summary
    assert summary.leftovers.dropped == [stuck] and "DECIMAL(5,2)" in summary.leftovers.reason
    assert f"dropped 1 load package(s) an earlier run could not load ({stuck})" in (
        "\n".join(summary.problems())
    )
    assert [f.operations[0] for f in summary.failures] == ["orders"]
    assert summary.rows_loaded["campaign_ab_tests"] > 0 and pending_packages(settings) == []

    # Once the column is fixed the orders load from the same window: their cursor was rewound.
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(f"alter table {RAW_DATASET}.orders alter amount_w_tax type decimal(38, 9)")
    standin.clear_log()
    summary = run_ingestion(
        settings, only=only, start=JUNE, end=DEFAULT_TODAY, transport=standin.transport()
    )
    assert summary.failures == [] and summary.leftovers.any is False
    assert windows_asked(standin, "/orders") == failed_window
    assert integrity_problems(settings.warehouse_path) == {}


# ------------------------------------------------------------------ 3. kill -9 in the load step

KILL_END = date(2026, 6, 30)
KILL_ARGS = [
    "--only",
    "contacts_details",
    "--start-date",
    JUNE.isoformat(),
    "--end-date",
    "2026-06-30",
]


@pytest.fixture(scope="module")
def served(small_world):
    standin = StandIn(small_world, token=TOKEN)
    with standin.serve(host="127.0.0.1", port=0) as base_url:
        yield standin, base_url


def _ingest(base_url: str, warehouse: Path, kill_after: int) -> subprocess.CompletedProcess:
    """`incomaker-elt ingest` of the contact details, killed after that many load statements."""
    return ingest_killed_after(base_url, TOKEN, warehouse, kill_after, KILL_ARGS)


def _kill_points(statements: int) -> list[int]:
    """Early, middle and late in the load step; every statement with INCOMAKER_KILL_POINTS=all.

    `statements` is the first run's count, which creates the tables too: a second run sends
    fewer, so the points stay within the first five eighths.
    """
    if os.environ.get("INCOMAKER_KILL_POINTS") == "all":
        return list(range(1, statements))
    return sorted({max(1, statements * eighths // 8) for eighths in (1, 3, 5)})


def test_a_run_killed_anywhere_in_the_load_step_ends_exact_after_the_next_run(served, tmp_path):
    _, base_url = served
    first = tmp_path / "first" / "warehouse" / "incomaker.duckdb"
    run = _ingest(base_url, first, 0)
    assert run.returncode == 0, run.stderr
    statements = int(re.search(r"load statements: (\d+)", run.stderr).group(1))
    expected = counts(first)
    assert expected["contacts"] > 0 and expected["contacts_details__segments"] > 0

    killed_points = []
    for point in _kill_points(statements):
        where = tmp_path / f"killed_at_{point}"
        shutil.copytree(first.parent.parent, where)
        warehouse = where / "warehouse" / "incomaker.duckdb"
        killed = _ingest(base_url, warehouse, point)
        if killed.returncode != -signal.SIGKILL:
            continue  # the load had fewer statements this time: nothing to recover
        killed_points.append(point)
        # The next run (in this process: the CLI prints these same summary lines).
        settings = dataclasses.replace(settings_for(where), base_url=base_url)
        summary = run_ingestion(settings, only=["contacts_details"], start=JUNE, end=KILL_END)
        problems = "\n".join(summary.problems())
        assert re.search(r"earlier runs: (completed|dropped) 1 load package", problems), (
            f"kill point {point}: {problems}"
        )
        assert summary.rows_loaded, f"kill point {point}: the run fetched nothing new"
        assert counts(warehouse) == expected, f"kill point {point}"
        assert integrity_problems(warehouse) == {}, f"kill point {point}"
        assert pending_packages(settings) == []
    assert len(killed_points) >= 2, f"only {killed_points} of the kill points were reached"


# ------------------------------------------------------------------ 4. the Dagster path


def test_dagster_and_the_cli_load_the_rest_then_fail_naming_the_refused_operation(
    small_world, tmp_path, monkeypatch, capsys
):
    import dagster as dg

    from incomaker_elt.orchestration.ingestion_assets import build_raw_assets, raw_asset_key
    from incomaker_elt.orchestration.partitions import daily_partitions
    from incomaker_elt.orchestration.resources import api_resource

    refusing = Refusing(small_world, token=TOKEN, refused=["campaign_ab_tests"])
    with refusing.serve(host="127.0.0.1", port=0) as base_url:
        settings = dataclasses.replace(
            settings_for(tmp_path), base_url=base_url, dagster_home=tmp_path / "dagster_home"
        )
        _, snapshots = build_raw_assets(settings, CATALOGUE, daily_partitions(settings))
        wanted = [raw_asset_key(name) for name in ("campaign_ab_tests", "senders", "segments")]
        result = dg.materialize(
            [snapshots],
            resources={"incomaker_api": api_resource(settings)},
            selection=wanted,
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        # The same through `incomaker-elt ingest`, into another warehouse.
        from incomaker_elt.cli import main

        cli_warehouse = tmp_path / "cli" / "incomaker.duckdb"
        monkeypatch.setenv("INCOMAKER_BASE_URL", base_url)
        monkeypatch.setenv("INCOMAKER_API_TOKEN", TOKEN)
        monkeypatch.setenv("INCOMAKER_WAREHOUSE", str(cli_warehouse))
        monkeypatch.setenv("INCOMAKER_REQUESTS_PER_SECOND", "0")
        args = ["ingest", "--only", "campaign_ab_tests", "senders", "--end-date", "2026-06-30"]
        code = main([*args, "--start-date", "2026-06-01"])
    out = capsys.readouterr()
    assert code == 1
    assert "senders" in out.out and counts(cli_warehouse)["senders"] > 0
    assert "failed: campaign_ab_tests:" in out.err and "404" in out.err
    assert "campaign_ab_tests failed; every other operation was loaded" in out.err
    assert not result.success
    materialised = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialised == {raw_asset_key("senders"), raw_asset_key("segments")}
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "campaign_ab_tests" in message and "404" in message
    assert "senders" in message  # it says what was loaded, too
    assert counts(settings.warehouse_path)["senders"] > 0
    assert "campaign_ab_tests" not in counts(settings.warehouse_path)
