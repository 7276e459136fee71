"""The console of `incomaker-elt run`: short, the summary last, each warning once, a full log file.

One short real run (three days of orders, the RFM cells, the staging and intermediate models
built on the orders with their tests, against the stand-in; no mart, as every mart's tests reach
other marts, so nothing to publish) goes through the console as `incomaker-elt run` uses it; toy
jobs show the repeats, the terminal display and `--verbose`.
"""

import contextlib
import dataclasses
import io
import logging
import re
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from api_pages import standin_settings

from incomaker_elt.console import LOGGER_NAME, RunConsole, log_file_path, remove_old_log_files
from incomaker_elt.run import print_summary, run_pipeline
from incomaker_elt.standin import StandIn

TOKEN = "console-token"
FIRST_DAY = date(2026, 6, 28)
LAST_DAY = date(2026, 6, 30)
SELECTION = [
    dg.AssetKey(["incomaker_raw", "orders"]),
    dg.AssetKey(["incomaker_raw", "rfm_cells"]),
    *(
        dg.AssetKey([layer, name])
        for layer, name in (
            ("staging", "stg_incomaker__orders"),
            ("intermediate", "int_rfm__window_resolved"),
            ("intermediate", "int_rfm__contacts_aggregated"),
            ("intermediate", "int_rfm__contacts_scored"),
        )
    ),
]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Any control character but tab and newline: a plain console has no cursor moves or colours."""


@dataclasses.dataclass
class ShortRun:
    console: RunConsole
    lines: list[str]
    log: str


@pytest.fixture(scope="module")
def short_run(small_world, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShortRun]:
    folder = tmp_path_factory.mktemp("console")
    service = StandIn(small_world, token=TOKEN)
    with service.serve(host="127.0.0.1", port=0) as base_url:
        settings = dataclasses.replace(
            standin_settings(folder, TOKEN),
            base_url=base_url,
            partitions_start=FIRST_DAY,
            dagster_home=folder / "dagster_home",
        )
        settings.warehouse_path.parent.mkdir(parents=True)
        settings.dagster_home.mkdir()
        out = io.StringIO()
        console = RunConsole(
            log_file_path(folder / "logs", "0123456789"), out=out, live=False, plain_every_s=0.0
        )
        with console.capturing():
            console.note("a short run")
            summary = run_pipeline(settings, LAST_DAY, console, selection=SELECTION)
        with contextlib.redirect_stdout(out):
            print_summary(summary, settings, "stand-in API")
    yield ShortRun(console, out.getvalue().splitlines(), console.log_path.read_text())


def test_the_console_of_a_run_is_short_plain_and_ends_with_the_summary(
    short_run: ShortRun,
) -> None:
    lines = short_run.lines
    # Even printing every progress change (plain_every_s=0), the run stays within two screens.
    assert len(lines) <= 100, "\n".join(lines)
    assert lines[-1].startswith("  took ") and "ingestion" in lines[-1], lines[-3:]
    assert any(line.startswith("incomaker-elt run ") for line in lines)
    assert f"  log: {short_run.console.log_path}" in lines
    assert not [line for line in lines if CONTROL.search(line)]
    # One line per stage event, not per model, page or Dagster event.
    for stage in ("ingestion", "dbt", "checks"):
        assert any(line.startswith(f"{stage}: done in ") for line in lines), stage
    assert not [line for line in lines if " of " in line and " START " in line]
    assert not [line for line in lines if "STEP_START" in line or "dagster - " in line]
    ingestion = [line for line in lines if line.startswith("ingestion: done in ")][0]
    assert "2/2 operations" in ingestion and " pages, " in ingestion
    dbt_done = [line for line in lines if line.startswith("dbt: done in ")][0]
    assert re.search(r": 4 models, [1-9]\d* tests", dbt_done), dbt_done  # a part: no totals
    # The same warning text is never shown twice.
    shown = [line for line in lines if line.startswith("warning: ")]
    assert len(shown) == len(set(shown))


def test_the_log_file_holds_the_whole_detail(short_run: ShortRun) -> None:
    log = short_run.log
    assert "a short run" in log
    assert "STEP_START" in log and "incomaker_dbt" in log  # Dagster's events
    assert re.search(r"dbt\.stdout: \d+ of \d+ OK created sql \w+ model staging\.", log)
    assert re.search(r"ingestion\.progress: orders: \d+ pages, \d+ rows", log)
    assert "\x1b[" not in log  # dbt's colours are stripped
    assert len(log.splitlines()) > 2 * len(short_run.lines)
    assert short_run.console.stage_seconds().keys() == {"ingestion", "dbt", "checks"}


# ------------------------------------------------------------------------------ toy jobs

_PARTITIONS = dg.StaticPartitionsDefinition(["2026-06-28", "2026-06-29", "2026-06-30"])


@dg.asset(partitions_def=_PARTITIONS, key=dg.AssetKey(["incomaker_raw", "orders"]))
def _raw_orders(context: dg.AssetExecutionContext) -> None:
    context.log.warning("orders: a value did not come as its field's type")
    logging.getLogger("incomaker_elt.ingestion.recovery").warning(
        "found 1 load package left by an earlier run"
    )
    logging.getLogger("incomaker_elt.ingestion.pipeline").error(
        "contacts: extract failed: HTTP 500"
    )
    context.log.info(f"loaded {context.partition_key}")
    print("1 of 2 START sql view model staging.stg_incomaker__orders ...... [RUN]")
    print("1 of 2 OK created sql view model staging.stg_incomaker__orders . [OK in 0.1s]")


def _run_toy(console: RunConsole, partitions: int = 3) -> None:
    defs = dg.Definitions(
        assets=[_raw_orders],
        jobs=[dg.define_asset_job("toy")],
        loggers={LOGGER_NAME: console.dagster_logger()},
    )
    job = defs.resolve_job_def("toy")
    console.expect({"incomaker_raw__orders": "ingestion"}, operations=1)
    with console.capturing(), dg.DagsterInstance.ephemeral() as instance:
        for key in _PARTITIONS.get_partition_keys()[:partitions]:
            job.execute_in_process(
                run_config={"loggers": {LOGGER_NAME: {}}}, partition_key=key, instance=instance
            )
        console.finish()


def test_a_warning_repeated_per_partition_is_shown_once_and_logged_each_time(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    console = RunConsole(tmp_path / "run.log", out=out, live=False)
    _run_toy(console)
    shown = [line for line in out.getvalue().splitlines() if line.startswith(("warning", "error"))]
    assert shown == [
        "warning: orders: a value did not come as its field's type",
        "warning: found 1 load package left by an earlier run",
        "error: contacts: extract failed: HTTP 500",
    ]
    assert set(console.warnings.values()) == {3}
    log = console.log_path.read_text()
    assert log.count("a value did not come as its field's type") == 3
    assert log.count("found 1 load package left by an earlier run") == 3
    assert "loaded 2026-06-29" in log and "loaded 2026-06-29" not in out.getvalue()


def test_verbose_streams_everything_to_the_console(tmp_path: Path) -> None:
    out = io.StringIO()
    console = RunConsole(tmp_path / "run.log", out=out, verbose=True)
    _run_toy(console, partitions=2)
    text = out.getvalue()
    assert text.count("a value did not come as its field's type") == 2
    assert text.count("found 1 load package left by an earlier run") == 2
    assert "loaded 2026-06-28" in text and "loaded 2026-06-29" in text
    assert text.count("OK created sql view model staging.stg_incomaker__orders") == 2
    assert "ingestion: " not in text  # the stream, not the progress lines


def test_on_a_terminal_the_stages_are_a_live_display(tmp_path: Path) -> None:
    out = io.StringIO()
    console = RunConsole(tmp_path / "run.log", out=out, live=True)
    stdout = sys.stdout
    _run_toy(console, partitions=1)
    assert sys.stdout is stdout  # given back as it was
    text = out.getvalue()
    assert "\x1b[" in text  # drawn and redrawn in place
    assert "ingestion" in text and "warning: found 1 load package" in text
    assert "OK created sql view model" not in text  # what the run prints goes to the log
    assert "OK created sql view model" in console.log_path.read_text()


def test_one_log_file_per_run_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    first = log_file_path(tmp_path, "aaaaaaaa-1")
    assert first.parent == tmp_path and first.name.startswith("run-") and "aaaaaaaa" in first.name
    for day in range(1, 6):
        (tmp_path / f"run-2026060{day}T000000Z-0000000{day}.log").write_text("old run\n")
    remove_old_log_files(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run-20260604T000000Z-00000004.log",
        "run-20260605T000000Z-00000005.log",
    ]


def test_run_logs_stay_out_of_dagsters_telemetry_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's webserver and daemon move the files of DAGSTER_HOME/logs away and post them to
    its telemetry server, whatever dagster.yaml says: a run's log (account data) must not be one."""
    from dagster._core.telemetry_upload import get_or_create_dir_from_dagster_home

    from incomaker_elt.contract.settings import load_settings
    from incomaker_elt.run import run_logs_folder

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    telemetry = Path(get_or_create_dir_from_dagster_home("logs")).resolve()
    ours = run_logs_folder(load_settings()).resolve()
    assert ours.parent == tmp_path.resolve()  # still beside the run history
    assert ours != telemetry and telemetry not in ours.parents
