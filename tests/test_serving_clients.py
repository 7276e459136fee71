"""The serving copy opens in the DuckDB 1.x that BI tools bundle, not only in the project's DuckDB.

A separate DuckDB 1.x (tests/duckdb1_reader.txt, installed by `make install` into .venv/duckdb1)
runs in a subprocess with only that folder on its path and reads the published file as a BI tool
would: read-only, every column of every mart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from incomaker_elt.contract.settings import (
    DEFAULT_SERVING_STORAGE_VERSION,
    PROJECT_ROOT,
    ConfigurationError,
    load_settings,
)
from incomaker_elt.orchestration.serving import PublishError, publish_serving_warehouse

READER_DIR = PROJECT_ROOT / ".venv" / "duckdb1"
READER_PIN = PROJECT_ROOT / "tests" / "duckdb1_reader.txt"

READ_EVERY_MART = """
import json, sys
import duckdb

con = duckdb.connect(sys.argv[1], read_only=True)
relations = con.execute(
    "select table_schema, table_name from information_schema.tables "
    "where table_schema <> 'main' order by 1, 2"
).fetchall()
tables = {}
for schema, name in relations:
    target = f'"{schema}"."{name}"'
    # Every column of every row, decoded by the reader itself; hashed so nothing reaches Python.
    count, _ = con.execute(f"select count(*), sum(hash(columns(*))) from {target}").fetchone()[:2]
    tables[f"{schema}.{name}"] = count
totals = con.execute(
    "select currency, sum(amount)::varchar, min(ordered_at)::varchar, max(ordered_on)::varchar, "
    "count(*) filter (where is_paid), string_agg(tags[1], ',' order by order_id) "
    "from marts.fct_conversions group by currency order by currency"
).fetchall()
publication = con.execute(
    "select run_id, storage_version, published_at::varchar from main.publication"
).fetchone()
print(json.dumps({
    "version": duckdb.__version__,
    "tables": tables,
    "totals": totals,
    "publication": publication,
}))
"""


def _pinned_reader_version() -> str:
    pins = re.findall(r"^duckdb==(\S+)$", READER_PIN.read_text(), flags=re.MULTILINE)
    assert len(pins) == 1, f"{READER_PIN} must pin exactly one duckdb==X.Y.Z"
    return pins[0]


def _read_with_duckdb1(serving: Path) -> subprocess.CompletedProcess[str]:
    """READ_EVERY_MART run by the DuckDB 1.x in .venv/duckdb1, and by nothing else."""
    pinned = _pinned_reader_version()
    if not (READER_DIR / "duckdb" / "__init__.py").is_file():
        pytest.fail(
            f"the DuckDB {pinned} reader is not installed in {READER_DIR}; run `make install`",
            pytrace=False,
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(READER_DIR)
    # -S: no site-packages, so the project's own DuckDB cannot stand in for the reader.
    return subprocess.run(
        [sys.executable, "-S", "-c", READ_EVERY_MART, str(serving)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _make_warehouse(path: Path) -> None:
    """The column types our marts hold: text, whole numbers, money, timestamps, dates, flags,
    lists and lists of structs; staging as a view over a raw table."""
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema incomaker_raw")
        con.execute("create schema staging")
        con.execute("create schema marts")
        con.execute(
            """
            create table incomaker_raw.orders as
            select
                range as order_id,
                ['CZK', 'EUR'][1 + range % 2] as currency,
                (range * 10 + 0.25)::decimal(18, 2) as amount,
                (range * 1000)::decimal(38, 2) as amount_reference,
                timestamp '2025-01-01 08:00:00' + to_hours(range) as ordered_at,
                date '2025-01-01' + (range // 24)::integer as ordered_on,
                range % 3 = 0 as is_paid,
                range / 7 as share,
                ['tag' || range, 'x'] as tags,
                [{'currency': 'CZK', 'amount': (range)::decimal(38, 2)}] as breakdown
            from range(500)
            """
        )
        con.execute(
            "create view staging.stg_incomaker__orders as select * from incomaker_raw.orders"
        )
        con.execute("create table marts.fct_conversions as select * from incomaker_raw.orders")
        con.execute(
            "create table marts.conversion_totals as select currency, sum(amount) as amount, "
            "count(*) as conversions from incomaker_raw.orders group by currency"
        )
    finally:
        con.close()


def test_the_default_format_is_the_one_the_reader_proves() -> None:
    """The pinned reader is the oldest DuckDB the default promises: a lower default, or a newer
    pin, would let this test pass without proving what docs/serving.md says."""
    pinned = _pinned_reader_version()
    assert DEFAULT_SERVING_STORAGE_VERSION.startswith(f"v{'.'.join(pinned.split('.')[:2])}."), (
        f"the default storage version {DEFAULT_SERVING_STORAGE_VERSION} is not the release line "
        f"of the reader {pinned} pinned in {READER_PIN.name}; change them together"
    )


def test_a_duckdb_1x_client_reads_every_mart_of_the_published_copy(tmp_path: Path) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    _make_warehouse(warehouse)

    published = publish_serving_warehouse(warehouse, serving, run_id="run-7")
    result = _read_with_duckdb1(serving)

    assert result.returncode == 0, f"DuckDB 1.x could not read the serving copy:\n{result.stderr}"
    seen = json.loads(result.stdout)
    assert seen["version"] == _pinned_reader_version(), (
        f"{READER_DIR} holds DuckDB {seen['version']}, not the pinned "
        f"{_pinned_reader_version()}; run `make install`"
    )
    assert seen["tables"] == published.tables
    assert seen["tables"]["marts.fct_conversions"] == 500
    expected_sums = {
        currency: sum(Decimal(i * 10) + Decimal("0.25") for i in range(500) if i % 2 == parity)
        for currency, parity in (("CZK", 0), ("EUR", 1))
    }
    assert [(row[0], Decimal(row[1])) for row in seen["totals"]] == sorted(expected_sums.items())
    assert [row[2:5] for row in seen["totals"]] == [
        ["2025-01-01 08:00:00", "2025-01-21", 84],
        ["2025-01-01 09:00:00", "2025-01-21", 83],
    ]
    assert seen["totals"][0][5].startswith("tag0,tag2,tag4,")
    run_id, storage_version, _ = seen["publication"]
    assert (run_id, storage_version) == ("run-7", DEFAULT_SERVING_STORAGE_VERSION)
    assert published.storage_version == DEFAULT_SERVING_STORAGE_VERSION


@pytest.mark.skipif(
    int(duckdb.__version__.split(".")[0]) < 2,
    reason="the installed DuckDB is 1.x: its newest format is one DuckDB 1.x reads",
)
def test_duckdb_2_format_is_what_locks_the_1x_client_out(tmp_path: Path) -> None:
    """The reader really tells the formats apart: DuckDB 2.0's own format fails it."""
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    _make_warehouse(warehouse)

    publish_serving_warehouse(warehouse, serving, storage_version="latest")
    result = _read_with_duckdb1(serving)

    assert result.returncode != 0
    assert "database file with version number" in result.stderr


def test_the_setting_chooses_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (("v1.2.0", "v1.2.0"), ("1.5", "v1.5.0"), ("v1.4.3", "v1.4.0")):
        monkeypatch.setenv("INCOMAKER_SERVING_STORAGE_VERSION", value)
        assert load_settings().serving_storage_version == expected
    monkeypatch.delenv("INCOMAKER_SERVING_STORAGE_VERSION")
    assert load_settings().serving_storage_version == DEFAULT_SERVING_STORAGE_VERSION


@pytest.mark.parametrize("value", ["v9.9", "duckdb-1.4", "v1"])
def test_a_bad_setting_is_one_line_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("INCOMAKER_SERVING_STORAGE_VERSION", value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"INCOMAKER_SERVING_STORAGE_VERSION={value!r}")
    assert "v1.4" in message and "v2.0" in message and "latest" in message


def test_a_column_the_older_format_cannot_hold_names_the_table_and_the_setting(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("create schema marts")
        if int(duckdb.__version__.split(".")[0]) < 2:
            pytest.skip("the installed DuckDB 1.x has no VARIANT type")
        con.execute("create table marts.events as select 1::variant as payload")
    finally:
        con.close()

    with pytest.raises(PublishError, match=r"marts\.events .*INCOMAKER_SERVING_STORAGE_VERSION"):
        publish_serving_warehouse(warehouse, serving, storage_version="v1.4.0")
    assert not serving.exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_a_killed_publishs_spill_folder_does_not_block_the_next(tmp_path: Path) -> None:
    """DuckDB spills into `<file>.tmp`: a publish killed while spilling leaves that folder."""
    warehouse = tmp_path / "incomaker.duckdb"
    serving = tmp_path / "incomaker_serving.duckdb"
    _make_warehouse(warehouse)
    spill = tmp_path / ".incomaker_serving.duckdb.0123abcd.tmp.tmp"
    spill.mkdir()
    (spill / "duckdb_temp_storage-0.tmp").write_bytes(b"x" * 1024)

    publish_serving_warehouse(warehouse, serving)

    assert not spill.exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []
