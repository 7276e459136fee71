"""`incomaker-elt run` is recorded in DAGSTER_HOME (incomaker_elt.orchestration.run_history), and
what it writes
is what Dagster's own SQLite storage reads: the UI sees the run, every partition, the checks."""

import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from incomaker_elt.orchestration.run_history import (
    BatchingSqliteEventLogStorage,
    fail_abandoned_runs,
    process_tags,
    recording_instance,
)

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-03-01")


@dg.asset(partitions_def=DAYS, check_specs=[dg.AssetCheckSpec("has_rows", asset="orders")])
def orders(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for index, day in enumerate(context.partition_keys):
        context.add_asset_metadata({"rows": index}, partition_key=day)
    return dg.MaterializeResult(
        metadata={"window": f"{context.partition_keys[0]}..{context.partition_keys[-1]}"},
        check_results=[dg.AssetCheckResult(check_name="has_rows", passed=True)],
    )


@dg.asset(deps=[orders])
def revenue() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": 3})


JOB = dg.Definitions(
    assets=[orders, revenue], jobs=[dg.define_asset_job("refresh")]
).resolve_job_def("refresh")
RANGE = {
    "dagster/asset_partition_range_start": "2026-01-01",
    "dagster/asset_partition_range_end": "2026-02-28",
}


def _stock(home: Path) -> dg.DagsterInstance:
    """The instance as the UI and the daemon open it: Dagster's own storage classes."""
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def test_a_partition_range_run_is_stored_in_batches_and_read_by_the_stock_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    calls: list[int] = []
    original = BatchingSqliteEventLogStorage.store_event_batch

    def counting(self: BatchingSqliteEventLogStorage, events: list[dg.EventLogEntry]) -> None:
        calls.append(len(events))
        original(self, events)

    monkeypatch.setattr(BatchingSqliteEventLogStorage, "store_event_batch", counting)
    with recording_instance(tmp_path) as instance:
        assert isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage)
        result = JOB.execute_in_process(
            instance=instance, tags={**RANGE, **process_tags("test")}, raise_on_error=False
        )
    assert result.success
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"]
    assert max(calls) == 59, "the 59 days' materialisations were not stored as one batch"

    with _stock(tmp_path) as ui:
        assert type(ui.event_log_storage).__name__ == "SqliteEventLogStorage"
        record = ui.get_run_record_by_id(result.run_id)
        assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["incomaker/pid"] == str(os.getpid())
        key = dg.AssetKey("orders")
        filled = ui.get_materialized_partitions(key)
        assert len(filled) == 59 and "2026-02-28" in filled
        events = ui.fetch_materializations(key, limit=100).records
        rows = {e.partition_key: e.asset_materialization.metadata["rows"].value for e in events}
        assert rows["2026-01-01"] == 0 and rows["2026-02-28"] == 58  # each day its own metadata
        latest = ui.get_latest_materialization_event(dg.AssetKey("revenue"))
        assert latest is not None and latest.run_id == result.run_id
        check = ui.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, "has_rows"), limit=1
        )
        assert check and check[0].status.value == "SUCCEEDED"
        logs = ui.all_logs(result.run_id)
        assert sum(e.dagster_event_type == "ASSET_MATERIALIZATION" for e in logs) == 60


def _asset_rows(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple]:
    """What the asset index says of each asset, as the UI reads it: the partition of its last
    materialisation, whether that is the latest materialisation event stored, whether its time
    is that event's, and whether its last run is this run."""
    rows = {}
    for record in instance.get_asset_records():
        entry = record.asset_entry
        last = entry.last_materialization_record
        assert last is not None
        stored = instance.fetch_materializations(entry.asset_key, limit=1000).records
        newest = max(stored, key=lambda event: event.storage_id)
        rows[entry.asset_key.to_user_string()] = (
            last.partition_key,
            last.storage_id == newest.storage_id,
            last.timestamp == newest.timestamp,
            entry.last_run_id == run_id,
        )
    return rows


def test_a_batch_leaves_each_assets_row_as_the_stock_storage_event_by_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch writes each asset's row once, from the last event of each type: the same row,
    last materialisation and last run as Dagster's own storage leaves, event after event."""
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    written: dict[str, int] = {"batched": 0, "stock": 0}
    home = "batched"
    stock_write = SqliteEventLogStorage._store_asset_event

    def counted(self: SqliteEventLogStorage, *args: object) -> None:
        written[home] += 1
        stock_write(self, *args)

    monkeypatch.setattr(SqliteEventLogStorage, "_store_asset_event", counted)
    results = {}
    for home in ("batched", "stock"):
        (tmp_path / home).mkdir()
        (tmp_path / home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        opened = recording_instance if home == "batched" else _stock
        with opened(tmp_path / home) as instance:
            tags = {**RANGE, **process_tags("test")}
            results[home] = JOB.execute_in_process(instance=instance, tags=tags).run_id
    with _stock(tmp_path / "batched") as ui, _stock(tmp_path / "stock") as reference:
        batched = _asset_rows(ui, results["batched"])
        stock = _asset_rows(reference, results["stock"])
    assert batched == {"orders": ("2026-02-28", True, True, True), "revenue": (None,) + (True,) * 3}
    assert batched == stock
    # the 59 days' materialisations of `orders` were one batch: one write of its row
    assert written["batched"] < 10 < 60 < written["stock"]


def test_a_run_whose_process_died_is_failed_by_the_next_run(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with recording_instance(tmp_path) as instance:
        orphan = instance.create_run_for_job(
            JOB, tags={"incomaker/pid": str(gone.pid)}, status=dg.DagsterRunStatus.STARTED
        )
        running = instance.create_run_for_job(
            JOB, tags=process_tags("test"), status=dg.DagsterRunStatus.STARTED
        )
        assert fail_abandoned_runs(instance) == [orphan.run_id]
        assert instance.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_configured_storage_is_left_alone(tmp_path: Path) -> None:
    """A dagster.yaml naming its own event log storage (Postgres, say) is used as it is."""
    (tmp_path / "dagster.yaml").write_text(
        "event_log_storage:\n"
        "  module: dagster._core.storage.event_log\n"
        "  class: SqliteEventLogStorage\n"
        f"  config:\n    base_dir: {tmp_path / 'elsewhere'}\n"
    )
    with recording_instance(tmp_path) as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
