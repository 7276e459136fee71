"""Where `incomaker-elt run` records its runs: the Dagster instance in DAGSTER_HOME, written fast.

A first load over the whole history materialises ~550 daily partitions of 14 raw tables: ~15,000
events. Dagster's SQLite event log opens a new database connection and commits once or twice per
event (20 ms each on this disk, 5 ms on tmpfs), which would add about five minutes to a three
minute run. Dagster already hands the per-partition events of one materialisation to its storage
as one batch when DAGSTER_EVENT_BATCH_SIZE is set (`DagsterEventBatchMetadata`), but the SQLite
storage then stores them one by one again. `BatchingSqliteEventLogStorage` stores such a batch in
one transaction per database file: the same tables, rows and files that the UI and the daemon read
with the stock storage, so nothing else needs configuring.

Every other event (a step's output, a check's result, a log line: ~700 in a first `make run`) is
still one transaction. Dagster keeps its SQLite files in WAL mode with SQLite's default
`synchronous=FULL`, and closes the connection after each event, so every event costs an fsync of
the log and a checkpoint: 15-20 ms on this disk. This storage commits with `synchronous=NORMAL`,
which in WAL mode still never leaves a file inconsistent (a power cut may lose the last events,
not the database), and holds one connection per file open while it lives so that closing the
others does not checkpoint: 0.3 ms a commit.

Instances that are not the default SQLite (a dagster.yaml with Postgres, say) are used unchanged.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from sqlalchemy import create_engine, event
from sqlalchemy.pool import NullPool

EVENT_BATCH_SIZE = 5000
"""Events per transaction; Dagster cuts a materialisation's partitions into batches of this size."""

TRIGGER_TAG = "incomaker/trigger"
PROCESS_TAG = "incomaker/pid"
"""The process executing a run started outside the daemon: a run whose process died is failed."""

_SQLITE_BUSY_TIMEOUT_SECONDS = 3600.0


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, storing a batch of events in one transaction per shard.

    Within `store_event_batch`, every connection the stock code asks for on this thread is the
    batch's open connection to that shard (the run's database, the cross-run index), so the stock
    `store_event` logic (asset index, tags, check executions) runs unchanged inside one
    transaction. Other threads wait on the storage's lock, as they do for a single event.

    It takes no pool slots (`supports_global_concurrency_limits`): the runs it records are
    executed in process without the daemon, which frees the slots of a run that died; a killed
    `incomaker-elt run` would otherwise hold the warehouse pool for ever. The warehouse's own lock
    file keeps writers apart instead (incomaker_elt.orchestration.warehouse.exclusive).
    """

    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        self._batch = threading.local()  # before super(), whose set-up already connects
        self._held: dict[str, sqlite3.Connection] = {}
        super().__init__(base_dir, inst_data)

    def dispose(self) -> None:
        for connection in self._held.values():
            connection.close()
        self._held.clear()
        super().dispose()

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> BatchingSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_global_concurrency_limits(self) -> bool:  # type: ignore[override]
        return False

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        # One "planned" event per asset for a range of partitions instead of one per partition
        # (7,257 on the first load of `small`). The price, as Dagster documents it: the partitions
        # of a failed run are not marked failed (their tables are left as they were, and the next
        # run loads them again).
        return True

    def _has_asset_key_col_on_connection(self, conn: Any, column_name: str) -> bool:
        # The stock code reflects the table's columns for every event (a fifth of its cost); the
        # schema does not change while a run writes.
        known: dict[str, bool] = self.__dict__.setdefault("_asset_key_columns", {})
        if column_name not in known:
            known[column_name] = super()._has_asset_key_col_on_connection(conn, column_name)
        return known[column_name]

    def has_table(self, table_name: str) -> bool:
        # Asked for every asset event, each time over a new engine; tables are never dropped.
        known: set[str] = self.__dict__.setdefault("_known_tables", set())
        if table_name not in known and super().has_table(table_name):
            known.add(table_name)
        return table_name in known

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:
        connections: dict[str, Any] | None = getattr(self._batch, "connections", None)
        if connections is None:
            with self._db_lock, self._transaction(shard) as conn:
                yield conn
            return
        if shard not in connections:
            connections[shard] = self._batch.stack.enter_context(self._transaction(shard))
        yield connections[shard]

    @contextmanager
    def _transaction(self, shard: str) -> Iterator[Any]:
        engine = create_engine(
            self.conn_string_for_shard(shard),
            poolclass=NullPool,
            connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        event.listen(engine, "connect", _commit_without_fsync)
        try:
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            if shard not in self._held:  # after _initdb: the file is in WAL mode now
                held = sqlite3.connect(self.path_for_shard(shard), check_same_thread=False)
                held.execute("PRAGMA schema_version").fetchone()  # opens the WAL: now it counts
                self._held[shard] = held
            with engine.connect() as conn, conn.begin():
                yield conn
        finally:
            engine.dispose()

    def _store_asset_event(self, conn: Any, event: dg.EventLogEntry, event_id: int) -> None:
        # The asset's row (last materialisation, last run) is written for every event, with the
        # event serialised into it: 7,257 writes of 13 rows on a first load of `small`. Within a
        # batch, the last event of each type per asset is written at its end instead: each type
        # sets the same columns, so the row ends as the events one by one would leave it.
        latest: dict[tuple[Any, str], tuple[Any, dg.EventLogEntry, int]] | None = getattr(
            self._batch, "latest", None
        )
        dagster_event = event.dagster_event
        if latest is None or dagster_event is None or dagster_event.asset_key is None:
            super()._store_asset_event(conn, event, event_id)
            return
        key = (dagster_event.asset_key, dagster_event.event_type_value)
        latest.pop(key, None)  # kept in the order of each one's last event
        latest[key] = (conn, event, event_id)

    def store_event_batch(self, events: Sequence[dg.EventLogEntry]) -> None:
        if len(events) <= 1:
            for event in events:
                self.store_event(event)
            return
        with self._db_lock, ExitStack() as stack:
            self._batch.connections = {}
            self._batch.stack = stack
            self._batch.latest = {}
            try:
                for event in events:
                    self.store_event(event)
                latest, self._batch.latest = self._batch.latest, None
                for conn, entry, entry_id in latest.values():
                    super()._store_asset_event(conn, entry, entry_id)
            finally:
                self._batch.connections = None
                self._batch.stack = None
                self._batch.latest = None


def _commit_without_fsync(connection: Any, _record: Any) -> None:
    connection.execute("PRAGMA synchronous=NORMAL")


def recording_instance(home: Path) -> dg.DagsterInstance:
    """The Dagster instance of DAGSTER_HOME, with batched event storage where it is SQLite.

    Sets DAGSTER_EVENT_BATCH_SIZE for this process (Dagster reads it per event), unless the user
    set it.
    """
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
    ref = InstanceRef.from_dir(str(home))
    if ref.storage_data is None or ref.storage_data.class_name != "DagsterSqliteStorage":
        return dg.DagsterInstance.from_ref(ref)
    batching = {
        "module": __name__,
        "class": BatchingSqliteEventLogStorage.__name__,
        "config": {"base_dir": str(home / "history" / "runs")},
    }
    return dg.DagsterInstance.from_ref(
        InstanceRef.from_dir(str(home), overrides={"event_log_storage": batching})
    )


def process_tags(trigger: str) -> dict[str, str]:
    """Tags of a run executed by this process: what started it and which process runs it."""
    return {TRIGGER_TAG: trigger, PROCESS_TAG: str(os.getpid())}


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark as failed the in-process runs whose process is gone (killed, machine restarted).

    Without the daemon nobody else notices them, and the UI would show them running for ever.
    Returns the ids of the runs it failed.
    """
    abandoned = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = run.tags.get(PROCESS_TAG)
        if pid is None or _alive(int(pid)):
            continue
        instance.report_run_failed(
            run, f"the process {pid} that executed this run ended before the run did (killed?)"
        )
        abandoned.append(run.run_id)
    return abandoned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
