"""Nothing bricks the warehouse: after a killed or refused run, running it again is the recovery.

Each test reproduces one way a run used to leave something behind (a stand-in still running,
half-published files, a lock error, dbt artefacts piling up, a traceback for a bad setting, a
summary hiding the cause) and asserts that it no longer does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from test_serving import read_published_tables

from incomaker_elt import run
from incomaker_elt.cli import main
from incomaker_elt.contract.settings import PROJECT_ROOT, ConfigurationError, load_settings
from incomaker_elt.orchestration.serving import leftover_temporaries, publish_serving_warehouse
from incomaker_elt.orchestration.warehouse import (
    WarehouseBusy,
    connect,
    exclusive,
    retry_while_locked,
)
from incomaker_elt.run import summarise

PYTHON = sys.executable


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return "State:\tZ" in state


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return _gone(pid)


def _python(code: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent(code)],
        cwd=PROJECT_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        **kwargs,
    )


# ------------------------------------------------------------------ 1. the stand-in child


def test_a_killed_run_takes_its_standin_with_it() -> None:
    parent = _python(
        """
        import time
        from incomaker_elt.run import standin_process
        with standin_process("small", 1, None) as standin:
            print(standin.process.pid, standin.base_url, flush=True)
            time.sleep(120)
        """
    )
    try:
        assert parent.stdout is not None
        child_pid, base_url = parent.stdout.readline().split()
        assert base_url.startswith("http://127.0.0.1:")
        assert not _gone(int(child_pid))
    finally:
        parent.kill()  # kill -9: no clean-up code of the parent runs
        parent.wait()
    assert _wait_gone(int(child_pid), 15), "the stand-in outlived the run that started it"


def test_the_standin_stops_when_its_parents_pipe_closes() -> None:
    """The portable path (no Linux parent-death signal involved: the parent lives on)."""
    standin = subprocess.Popen(
        [PYTHON, "-m", "incomaker_elt.cli", "simulate", "--port", "0", "--exit-with-parent"],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert standin.stdout is not None
        assert "serving http://127.0.0.1:" in standin.stdout.readline()
        assert standin.stdin is not None
        standin.stdin.close()
        assert standin.wait(15) == 0
    finally:
        if standin.poll() is None:
            standin.kill()
            standin.wait()


# ------------------------------------------------------------ 2. a publish killed half-way


def _warehouse(path: Path, version: int) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("create schema if not exists marts")
        for name in ("conversions_daily", "delivery_daily", "rfm_segments"):
            con.execute(
                f"create or replace table marts.{name} as "
                f"select range as id, {version} as version from range(20000)"
            )


@pytest.mark.parametrize("killed_at", ["after the first table", "before the replace"])
def test_a_publish_killed_half_way_leaves_the_copy_whole_and_the_next_one_cleans_up(
    tmp_path: Path, killed_at: str
) -> None:
    warehouse, serving = tmp_path / "incomaker.duckdb", tmp_path / "incomaker_serving.duckdb"
    _warehouse(warehouse, 1)
    publish_serving_warehouse(warehouse, serving)
    before = read_published_tables(serving)
    _warehouse(warehouse, 2)

    hook = (
        "serving._copy_relation = lambda *a: (copy(*a), os.kill(os.getpid(), signal.SIGKILL))"
        if killed_at == "after the first table"
        else "serving.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = _python(
        f"""
        import os, signal
        from pathlib import Path
        from incomaker_elt.orchestration import serving
        copy = serving._copy_relation
        {hook}
        serving.publish_serving_warehouse(Path({str(warehouse)!r}), Path({str(serving)!r}))
        """
    )
    assert killed.wait(60) == -signal.SIGKILL
    assert leftover_temporaries(serving), "the kill came too late to test anything"

    assert read_published_tables(serving) == before
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("select max(version) from marts.rfm_segments").fetchone() == (1,)

    publish_serving_warehouse(warehouse, serving)
    assert leftover_temporaries(serving) == []
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "incomaker.duckdb",
        "incomaker_serving.duckdb",
    ]
    with duckdb.connect(str(serving), read_only=True) as con:
        assert con.execute("select max(version) from marts.rfm_segments").fetchone() == (2,)


# ----------------------------------------------------- 3. readers of the working warehouse


def _reader(path: Path, every: float, hold: float, seconds: float) -> subprocess.Popen[str]:
    """A process that opens the warehouse read-only for `hold` s every `every` s (and, like a
    BI tool's refresh, fails while a writer has it, and tries again next time)."""
    return _python(
        f"""
        import time, duckdb
        print("reading", flush=True)
        end = time.monotonic() + {seconds}
        while time.monotonic() < end:
            try:
                con = duckdb.connect({str(path)!r}, read_only=True)
            except duckdb.IOException:
                pass
            else:
                con.execute("select count(*) from t").fetchone()
                time.sleep({hold})
                con.close()
            time.sleep({every})
        """
    )


def test_a_writer_waits_out_a_reader_that_opens_the_warehouse_every_50_ms(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table t as select 1 as n")
    reader = _reader(warehouse, every=0.05, hold=0.02, seconds=120)
    try:
        assert reader.stdout is not None and reader.stdout.readline()
        time.sleep(0.3)
        for n in range(2, 22):
            with exclusive(warehouse, timeout=5):
                con = connect(warehouse, timeout=5)
                con.execute("insert into t values (?)", [n])
                con.close()
            time.sleep(0.03)
        assert reader.poll() is None, "the reader ended before the writes: nothing was tested"
    finally:
        reader.kill()
        reader.wait()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from t").fetchone() == (21,)


def test_a_writer_gives_up_after_the_timeout_and_names_the_holder(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    duckdb.connect(str(warehouse)).close()
    holder = _python(
        f"""
        import time, duckdb
        con = duckdb.connect({str(warehouse)!r}, read_only=True)
        print("holding", flush=True)
        time.sleep(60)
        """
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        started = time.monotonic()
        with pytest.raises(WarehouseBusy) as busy, exclusive(warehouse, timeout=1.0):
            pass
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert 1.0 <= waited < 5
    assert busy.value.holder_pid == holder.pid
    assert f"PID {holder.pid}" in str(busy.value)
    assert "serving copy" in str(busy.value)
    assert "\n" not in str(busy.value)


def test_only_lock_conflicts_are_retried(tmp_path: Path) -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise duckdb.CatalogException("Table with name nope does not exist")

    with pytest.raises(duckdb.CatalogException):
        retry_while_locked(broken, tmp_path / "incomaker.duckdb", timeout=5)
    assert calls == [1]


# -------------------------------------------------------------- 4. dbt artefacts are bounded


def _size(folder: Path, *, leaving_out: Sequence[Path]) -> int:
    """Bytes of the files under `folder`, those under `leaving_out` left out (the folders that
    other builds, of other tests running at the same time, write to and remove)."""
    total = 0
    for path in folder.rglob("*"):
        with suppress(FileNotFoundError):  # another build removed it meanwhile
            if path.is_file() and not any(out in path.parents for out in leaving_out):
                total += path.stat().st_size
    return total


def test_a_dbt_build_leaves_no_artefacts_and_clears_an_earlier_failed_ones(
    tmp_path: Path, monkeypatch
) -> None:
    """The earlier build is stood in by its leftovers: one run's worth of artefacts that a
    failed (or killed) build left, and a folder another build is still writing."""
    from incomaker_elt.orchestration.transform import (
        DBT_TARGET_DIR,
        PARSES_DIR,
        PARSES_KEPT,
        dbt_resource,
        prepare_manifest,
        run_target,
    )
    from incomaker_elt.orchestration.transform_assets import build_dbt_assets

    monkeypatch.setenv("INCOMAKER_WAREHOUSE", str(tmp_path / "incomaker.duckdb"))
    settings = load_settings()
    if not (DBT_TARGET_DIR / "manifest.json").is_file():
        prepare_manifest()
    runs = DBT_TARGET_DIR / "runs"
    with run_target("failed0") as failed:
        (failed / "compiled.sql").write_bytes(b"x" * 4_000_000)
    with run_target("busy0000") as busy:
        try:
            before = _size(DBT_TARGET_DIR, leaving_out=(PARSES_DIR, runs))
            result = dg.materialize(
                [build_dbt_assets(settings)],
                selection=[dg.AssetKey(["staging", "stg_incomaker__segments"])],
                resources={"dbt": dbt_resource()},
            )
            assert result.success
            assert any(e.is_step_materialization for e in result.all_events)
            assert not failed.exists(), "the failed build's artefacts were not cleared"
            assert busy.exists(), "a folder another build holds was removed"
            left = list(runs.glob(f"{result.run_id[:8]}-*"))
            assert left == [], "the build left its artefacts"
            growth = _size(DBT_TARGET_DIR, leaving_out=(PARSES_DIR, runs)) - before
            assert growth < 256 * 1024, f"a dbt build grew dbt_project/target by {growth} bytes"
            # its partial parse is kept for the next command on this warehouse, a few at most
            assert len(list(PARSES_DIR.glob("*.msgpack"))) <= PARSES_KEPT
        finally:
            shutil.rmtree(busy, ignore_errors=True)


# ------------------------------------------------------------ 5. bad settings: one line, exit 2


@pytest.mark.parametrize(
    ("variable", "value", "argv", "says"),
    [
        ("INCOMAKER_PARTITIONS_START", "garbage", ["endpoints"], "INCOMAKER_PARTITIONS_START"),
        ("INCOMAKER_PARTITIONS_START", "2025-13-45", ["run"], "ISO date"),
        ("INCOMAKER_INGEST_CONCURRENCY", "eight", ["ingest", "--only", "orders"], "whole number"),
        ("INCOMAKER_INGEST_CONCURRENCY", "0", ["transform"], "at least 1"),
        ("INCOMAKER_WAREHOUSE_LOCK_TIMEOUT", "soon", ["run"], "seconds"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    monkeypatch, capsys, variable: str, value: str, argv: list[str], says: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"incomaker-elt {argv[0]}: {variable}={value!r}")
    assert says in err
    assert "\n" not in err and "Traceback" not in err


def test_a_setting_error_is_still_a_value_error(monkeypatch) -> None:
    monkeypatch.setenv("INCOMAKER_PARTITIONS_START", "garbage")
    with pytest.raises(ValueError):
        load_settings()
    with pytest.raises(ConfigurationError):
        load_settings()


def test_an_unwritable_warehouse_folder_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    # A file where the folder should be stops root too, for whom permission bits do not.
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("INCOMAKER_WAREHOUSE", str(tmp_path / "not-a-folder" / "w.duckdb"))
    assert main(["ingest", "--only", "orders"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("incomaker-elt ingest: INCOMAKER_WAREHOUSE=")
    assert "cannot write" in err and "\n" not in err


def test_a_catalogue_override_error_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("operations: [\n")
    monkeypatch.setenv("INCOMAKER_CATALOGUE_OVERRIDES", str(overrides))
    assert main(["endpoints"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("incomaker-elt endpoints: catalogue error:")
    assert "\n" not in err and "Traceback" not in err


def test_the_command_line_prints_no_traceback_for_a_bad_setting() -> None:
    done = subprocess.run(
        [PYTHON, "-m", "incomaker_elt.cli", "run"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "INCOMAKER_INGEST_CONCURRENCY": "lots"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "incomaker-elt run: INCOMAKER_INGEST_CONCURRENCY='lots' must be a whole number of at "
        "least 1; set one or unset it"
    ]


# ------------------------------------------------ 6. the summary names the cause of a failure


def test_the_summary_names_the_cause_of_a_step_that_failed_after_its_retries() -> None:
    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2))
    def raw_orders() -> None:
        raise dg.Failure("ingestion failed: the API answered 503 for orders", allow_retries=True)

    @dg.asset
    def marts_rfm() -> None:
        raise ZeroDivisionError("division by zero in the RFM scores")

    result = dg.materialize([raw_orders, marts_rfm], raise_on_error=False)
    summary = summarise(result, 1.0)
    assert summary.failed_steps == {
        "raw_orders": "ingestion failed: the API answered 503 for orders",
        "marts_rfm": "ZeroDivisionError: division by zero in the RFM scores",
    }


def test_the_failure_alert_names_each_failed_steps_cause(tmp_path: Path) -> None:
    import httpx

    from incomaker_elt.orchestration.alerts import build_run_failure_sensor

    posted: list[str] = []

    def webhook(request: httpx.Request) -> httpx.Response:
        posted.append(httpx.Response(200, content=request.content).json()["text"])
        return httpx.Response(200)

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
    def load_raw_tables() -> None:
        raise RuntimeError("the API said no")

    @dg.job
    def nightly() -> None:
        load_raw_tables()

    settings = replace(load_settings(), alert_webhook_url="https://hooks.invalid/x")
    sensor = build_run_failure_sensor(settings, transport=httpx.MockTransport(webhook))
    with dg.DagsterInstance.ephemeral() as instance:
        result = nightly.execute_in_process(instance=instance, raise_on_error=False)
        (record,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        sensor(
            dg.build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_instance=instance,
                dagster_run=result.dagster_run,
                dagster_event=record.get_dagster_event(),
            ).for_run_failure()
        )
    assert len(posted) == 1
    assert "load_raw_tables (RuntimeError: the API said no)" in posted[0]


def test_tables_are_counted_and_views_only_described(tmp_path: Path) -> None:
    """Counting a view computes it (18.5 s a night for the staging views at `large`): a view gets
    its columns but no row count, so one that cannot be computed (a cast failing on a value,
    which dbt's tests report) cannot replace dbt's own failure as the step's error either."""
    from incomaker_elt.orchestration.transform_assets import Model, with_table_metadata

    warehouse = tmp_path / "incomaker.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema staging")
        con.execute("create schema marts")
        con.execute("create table staging.raw as select 'not-a-number' as campaign_id")
        con.execute(
            "create view staging.broken as select campaign_id::bigint as campaign_id "
            "from staging.raw where campaign_id::bigint > 0"
        )
        con.execute("create table marts.fine as select 1 as n union all select 2")
    events = [
        dg.Output(None, "broken", metadata={"unique_id": "model.p.broken"}),
        dg.Output(None, "fine", metadata={"unique_id": "model.p.fine"}),
    ]
    models = {
        "model.p.broken": Model("staging", "broken", {"campaign_id": "the campaign"}),
        "model.p.fine": Model("marts", "fine", {}),
    }
    counted = with_table_metadata(events, models, warehouse)
    assert "dagster/row_count" not in counted[0].metadata
    (column,) = counted[0].metadata["dagster/column_schema"].value.columns
    assert (column.name, column.type, column.description) == (
        "campaign_id",
        "BIGINT",
        "the campaign",
    )
    assert counted[1].metadata["dagster/row_count"].value == 2


def test_the_ui_says_a_catalogue_override_error_before_starting_dagster(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("operations: [\n")
    monkeypatch.setenv("INCOMAKER_CATALOGUE_OVERRIDES", str(overrides))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    started: list[list[str]] = []
    monkeypatch.setattr(run, "_dagster_dev", lambda command, env: started.append(command) or 0)
    assert main(["ui"]) == 2
    assert started == []
    err = capsys.readouterr().err.strip()
    assert err.startswith("incomaker-elt ui: catalogue error:") and "\n" not in err


def test_ingest_waits_for_a_reader_then_names_it_in_one_line(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    duckdb.connect(str(warehouse)).close()
    monkeypatch.setenv("INCOMAKER_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("INCOMAKER_WAREHOUSE_LOCK_TIMEOUT", "1")
    holder = _python(
        f"""
        import time, duckdb
        con = duckdb.connect({str(warehouse)!r}, read_only=True)
        print("holding", flush=True)
        time.sleep(60)
        """
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        assert main(["ingest", "--only", "orders"]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"incomaker-elt ingest: warehouse {warehouse} stayed locked by PID")
    assert f"PID {holder.pid}" in err[-1]


def test_the_warehouse_lock_can_be_taken_again_inside_itself(tmp_path: Path) -> None:
    import threading

    warehouse = tmp_path / "incomaker.duckdb"

    def nested() -> None:
        with exclusive(warehouse, timeout=1), exclusive(warehouse, timeout=1):
            pass
        with exclusive(warehouse, timeout=1):  # and it was released
            pass

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the inner lock waited for the outer one of the same process"


def test_a_dbt_whose_events_are_abandoned_is_stopped_and_lets_go_of_the_warehouse(
    tmp_path: Path,
) -> None:
    from incomaker_elt.orchestration.transform import stop_dbt

    warehouse = tmp_path / "incomaker.duckdb"
    duckdb.connect(str(warehouse)).close()
    # Like dbt mid-build: the file open for writing, output going to a pipe nobody reads.
    stuck = _python(
        f"""
        import duckdb, sys
        con = duckdb.connect({str(warehouse)!r})
        print("open", flush=True)
        while True:
            sys.stdout.write("x" * 65536)
        """
    )
    assert stuck.stdout is not None and stuck.stdout.readline()
    stop_dbt(stuck)
    assert stuck.poll() is not None
    connect(warehouse, timeout=5).close()
