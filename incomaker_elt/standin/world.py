"""The world: one synthetic Incomaker account, generated from (seed, scale), held in DuckDB.

Generation (numpy, vectorised) decides everything that ever happens in the horizon; "today" only
decides what the API shows, so the world itself never depends on today. Derived facts that need a
join (conversions, cart recovery) are computed once here, in SQL.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import cache

import duckdb
import numpy as np
import pyarrow as pa

from incomaker_elt.standin.generation import MISSING, Columns
from incomaker_elt.standin.generation.audience import generate_audience
from incomaker_elt.standin.generation.mailing import generate_mailing
from incomaker_elt.standin.generation.shop import generate_shop
from incomaker_elt.standin.scales import get_scale

# One independent random stream per part of the business, so that changing how (say) dialogs are
# generated does not reshuffle every contact.
_STREAM_AUDIENCE, _STREAM_SHOP, _STREAM_MAILING = 1, 2, 3
ATTRIBUTION_WINDOW_DAYS = 30
CART_RECOVERY_DAYS = 7


@dataclass(eq=False)
class World:
    seed: int
    scale: str
    connection: duckdb.DuckDBPyConnection = field(repr=False)
    counts: dict[str, int]
    build_seconds: float

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for one thread; every cursor sees the same in-memory tables."""
        return self.connection.cursor()

    def arrow(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        """Run a read-only query on a fresh cursor (safe from any thread)."""
        return self.cursor().sql(sql, params=_used(sql, params)).to_arrow_table()

    def rows(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        return self.cursor().sql(sql, params=_used(sql, params)).fetchall()

    def describe(self, sql: str, params: dict[str, object] | None = None) -> dict[str, str]:
        """Column names and DuckDB types of a query, without running it."""
        relation = self.cursor().sql(sql, params=_used(sql, params))
        return {
            name: str(kind) for name, kind in zip(relation.columns, relation.types, strict=True)
        }


def _used(sql: str, params: dict[str, object] | None) -> dict[str, object] | None:
    """The parameters the query names; DuckDB refuses values for parameters a query lacks."""
    if not params:
        return None
    named = set(re.findall(r"\$(\w+)", sql))
    return {k: v for k, v in params.items() if k in named} or None


def _arrow(columns: Columns) -> pa.Table:
    arrays = {}
    for name, values in columns.items():
        if name.endswith("_at") or name.endswith("_ts"):
            mask = values == MISSING
            micros = np.where(mask, 0, values) * 1_000_000
            arrays[name] = pa.array(micros, type=pa.timestamp("us"), mask=mask)
        elif values.dtype == np.int64:
            mask = values == MISSING
            arrays[name] = pa.array(values, mask=mask if mask.any() else None)
        elif values.dtype == object:
            arrays[name] = pa.array(values.tolist(), type=pa.string())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _load(con: duckdb.DuckDBPyConnection, name: str, columns: Columns) -> None:
    table = _arrow(columns)
    con.register("incoming", table)
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM incoming")
    con.unregister("incoming")


_DERIVED = f"""
-- A cart is recovered by the contact's first order within {CART_RECOVERY_DAYS} days after it.
CREATE TABLE carts AS
SELECT c.*, r.order_id AS recovered_order_id, r.created_at AS recovered_at
FROM carts_left c
LEFT JOIN (
    SELECT c.cart_id, min(o.order_id) AS order_id, min(o.created_at) AS created_at
    FROM carts_left c
    JOIN orders o
      ON o.contact_id = c.contact_id
     AND o.created_at > c.created_at
     AND o.created_at <= c.created_at + INTERVAL {CART_RECOVERY_DAYS} DAY
    GROUP BY c.cart_id
) r USING (cart_id);
DROP TABLE carts_left;

-- Attribution: the latest send to the contact opened within the window before the order. Send
-- ids follow send time, so the latest send is the largest id.
CREATE TABLE conversions AS
WITH attributed AS (
    SELECT o.order_id, max(e.send_id) AS send_id
    FROM orders o
    JOIN events e
      ON e.contact_id = o.contact_id
     AND e.event_type = 'opened'
     AND e.occurred_at < o.created_at
     AND e.occurred_at >= o.created_at - INTERVAL {ATTRIBUTION_WINDOW_DAYS} DAY
    GROUP BY o.order_id
)
SELECT
    row_number() OVER (ORDER BY o.order_id) AS conversion_id,
    o.order_id, o.contact_id, s.campaign_id, s.delivery_id, s.send_id,
    o.created_at::DATE AS date,
    o.created_at + to_days(o.record_delay_days::INTEGER) AS recorded_at,
    (o.created_at::DATE + o.record_delay_days::INTEGER) AS recorded_date,
    o.country, o.currency, o.amount_wo, o.amount_w, o.amount_wo_ref, o.amount_w_ref
FROM attributed a
JOIN orders o USING (order_id)
JOIN sends s USING (send_id)
ORDER BY conversion_id;
"""


def _contacts_with_unsubscribes(contacts: Columns, mailing) -> Columns:
    sends = mailing.sends
    via = mailing.unsubscribe_send_idx
    has = via >= 0
    safe = np.where(has, via, 0)
    out = {k: v for k, v in contacts.items() if k != "planned_unsubscribe_at"}
    out["unsubscribed_at"] = mailing.unsubscribed_at
    out["unsubscribe_campaign_id"] = np.where(has, sends["campaign_id"][safe], MISSING)
    out["unsubscribe_delivery_id"] = np.where(has, sends["delivery_id"][safe], MISSING)
    return out


def _generate(seed: int, scale_name: str) -> World:
    scale = get_scale(scale_name)
    started = time.perf_counter()

    def rng(stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([seed, stream]))

    audience = generate_audience(rng(_STREAM_AUDIENCE), scale)
    shop = generate_shop(rng(_STREAM_SHOP), audience.contacts, scale)
    mailing = generate_mailing(rng(_STREAM_MAILING), audience, scale)

    con = duckdb.connect(":memory:", config={"threads": 2})
    tables = {
        "contacts": _contacts_with_unsubscribes(audience.contacts, mailing),
        "segments": audience.segments,
        "segment_members": audience.segment_members,
        "senders": audience.senders,
        "categories": shop.categories,
        "products": shop.products,
        "orders": shop.orders,
        "order_items": shop.order_items,
        "carts_left": shop.carts,
        "cart_items": shop.cart_items,
        "dialogs": shop.dialogs,
        "dialog_days": shop.dialog_days,
        "campaigns": mailing.campaigns,
        "deliveries": mailing.deliveries,
        "sends": mailing.sends,
        "events": mailing.events,
    }
    for name in list(tables):
        _load(con, name, tables.pop(name))  # pop: let numpy memory go as each table lands
    del audience, shop, mailing
    con.execute(_DERIVED)
    names = [r[0] for r in con.sql("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
    counts = {n: con.sql(f"SELECT count(*) FROM {n}").fetchall()[0][0] for n in names}
    return World(seed, scale.name, con, counts, time.perf_counter() - started)


@cache
def build_world(seed: int = 1, scale: str = "small") -> World:
    """The world for (seed, scale), built once per process; equal inputs give equal worlds."""
    return _generate(int(seed), scale)
