"""The stand-in's figures agree with one another and with docs/world.md."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
from api_pages import first_at, instant, operation_at, records_at, total_items

from incomaker_elt.contract.catalogue import default_catalogue
from incomaker_elt.standin import StandIn
from incomaker_elt.standin.money import COUNTRY_VAT_PER_MILLE, RATE_E4

CATALOGUE = default_catalogue()

TOKEN = {"Authorization": "Bearer standin-token"}


def client_for(standin: StandIn) -> httpx.Client:
    return httpx.Client(transport=standin.transport(), base_url="http://standin", headers=TOKEN)


@pytest.fixture(scope="module")
def api(small_world) -> httpx.Client:
    with client_for(StandIn(small_world)) as client:
        yield client


def get(api: httpx.Client, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


def every(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """All records of a list (every page, in the catalogue's paging dialect)."""
    return records_at(api, CATALOGUE, path, **params)


def first(api: httpx.Client, path: str, size: int, **params: Any) -> list[dict[str, Any]]:
    """The records of the first page of `size` records."""
    return first_at(api, CATALOGUE, path, size, **params)


def records(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """The records of an unpaged answer, wherever the catalogue says they are."""
    return first_at(api, CATALOGUE, path, **params)


def cents(value: float) -> int:
    return int(Decimal(str(value)) * 100)


def half_up(total_cents: int, count: int) -> float:
    if not count:
        return 0.0
    value = (Decimal(total_cents) / count).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return float(value / 100)


FILTERS = [
    {},
    {"dateFrom": "2026-01-01", "dateTo": "2026-03-31"},
    {"dateFrom": "2025-06-01", "dateTo": "2025-12-31", "country": "CZ,SK"},
    {"currency": "EUR"},
    {"country": "HU", "currency": "HUF"},
    {"dateFrom": "2026-06-01"},
]


@pytest.mark.parametrize(
    "filters", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items())
)
def test_conversions_totals_equal_the_list(api: httpx.Client, filters: dict[str, str]) -> None:
    rows = every(api, "/conversions", **filters)
    totals = get(api, "/conversions/totals", **filters)
    conv = totals["conversions"]
    assert rows or not filters, "the unfiltered list must not be empty"
    n = len(rows)
    wo_ref = sum(cents(r["conversionAmountWoTaxReference"]) for r in rows)
    w_ref = sum(cents(r["conversionAmountWTaxReference"]) for r in rows)
    contacts = {r["contactId"] for r in rows}
    assert conv["conversionsNumber"] == n
    assert cents(conv["conversionsAmountWoTax"]) == wo_ref
    assert cents(conv["conversionsAmountWTax"]) == w_ref
    assert conv["currency"] == "CZK"
    assert conv["averageConversion"] == half_up(w_ref, n)
    assert totals["uniqueContacts"] == len(contacts)
    assert totals["averageUniqueConversion"] == half_up(w_ref, len(contacts))
    by_currency: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_currency[r["currency"]].append(r)
    assert [b["currency"] for b in conv["breakdown"]] == sorted(by_currency)
    for b in conv["breakdown"]:
        mine = by_currency[b["currency"]]
        w = sum(cents(r["conversionAmountWTax"]) for r in mine)
        assert b["conversionsNumber"] == len(mine)
        assert cents(b["conversionsAmountWoTax"]) == sum(
            cents(r["conversionAmountWoTax"]) for r in mine
        )
        assert cents(b["conversionsAmountWTax"]) == w
        assert b["averageConversion"] == half_up(w, len(mine))
        assert cents(b["conversionAmountWTaxReference"]) == sum(
            cents(r["conversionAmountWTaxReference"]) for r in mine
        )
    for r in rows:
        if "dateFrom" in filters:
            assert r["date"] >= filters["dateFrom"]
        if "country" in filters:
            assert r["country"] in filters["country"].split(",")
        assert (r["campaignId"] is None) != (r["deliveryId"] is None)


def test_conversion_amounts_follow_the_money_rules(api: httpx.Client) -> None:
    for r in every(api, "/orders", dateFrom="2026-05-01"):
        rate = RATE_E4[r["currency"]]
        vat = COUNTRY_VAT_PER_MILLE[r["country"]]
        wo, w = cents(r["amountWoTax"]), cents(r["amountWTax"])
        assert w == (2 * wo * (1000 + vat) + 1000) // 2000
        assert cents(r["amountWoTaxReference"]) == (2 * wo * rate + 10_000) // 20_000
        assert cents(r["amountWTaxReference"]) == (2 * w * rate + 10_000) // 20_000


def test_order_items_add_up_to_the_order(api: httpx.Client) -> None:
    for order in first(api, "/orders", 60):
        detail = get(api, f"/orders/{order['orderId']}")
        items = detail["items"]
        assert len(items) == order["itemsCount"]
        assert [i["lineNumber"] for i in items] == list(range(1, len(items) + 1))
        assert sum(cents(i["amountWoTax"]) for i in items) == cents(order["amountWoTax"])
        assert sum(cents(i["amountWTax"]) for i in items) == cents(order["amountWTax"])


def _events_by_day(events: list[dict[str, Any]]) -> dict[str, Counter]:
    days: dict[str, Counter] = defaultdict(Counter)
    unique: dict[tuple[str, str], set[int]] = defaultdict(set)
    for e in events:
        day = instant(e["occurredAt"]).date().isoformat()  # the day in UTC
        days[day][e["eventType"]] += 1
        unique[(day, e["eventType"])].add(e["sendId"])
    for (day, kind), sends in unique.items():
        days[day]["unique_" + kind] = len(sends)
    return days


def _compare_daily(results: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    expected = _events_by_day(events)
    assert {r["date"] for r in results} == set(expected)
    for r in results:
        day = expected[r["date"]]
        assert r["sent"] == day["sent"]
        assert r["delivered"] == day["delivered"]
        assert r["bounced"] == day["bounced"]
        assert r["opened"] == day["opened"]
        assert r["uniqueOpened"] == day["unique_opened"]
        assert r["clicked"] == day["clicked"]
        assert r["uniqueClicked"] == day["unique_clicked"]
        assert r["unsubscribed"] == day["unsubscribed"]


def test_campaign_daily_results_equal_recipient_activity(api: httpx.Client) -> None:
    campaigns = first(api, "/campaigns", 100)
    for campaign in campaigns[:6]:
        cid = campaign["campaignId"]
        events = every(api, f"/campaigns/{cid}/activity")
        results = every(api, "/campaigns/daily-results", campaignId=cid)
        _compare_daily(results, events)
        recipients = every(api, f"/campaigns/{cid}/recipients")
        assert len(recipients) == campaign["recipientsCount"]
        opens = Counter(e["sendId"] for e in events if e["eventType"] == "opened")
        clicks = Counter(e["url"] for e in events if e["eventType"] == "clicked")
        for r in recipients:
            assert r["opens"] == opens[r["sendId"]]
            assert r["delivered"] != r["bounced"]
        links = records(api, f"/campaigns/{cid}/links")
        assert {link["url"]: link["clicks"] for link in links} == dict(clicks)


def test_delivery_results_equal_recipient_activity(api: httpx.Client) -> None:
    deliveries = first(api, "/deliveries", 20)
    for delivery in deliveries[:3]:
        did = delivery["deliveryId"]
        events = every(api, "/deliveries/activity", deliveryId=did)
        _compare_daily(every(api, "/deliveries/daily-results", deliveryId=did), events)
        detail = get(api, f"/deliveries/{did}")
        kinds = Counter(e["eventType"] for e in events)
        assert detail["sent"] == kinds["sent"] and detail["opened"] == kinds["opened"]
        assert detail["uniqueClicked"] == len(
            {e["sendId"] for e in events if e["eventType"] == "clicked"}
        )
        conversions = every(api, f"/deliveries/{did}/conversions")
        assert detail["conversionsNumber"] == len(conversions)
        flow = records(api, f"/deliveries/smartflows/{delivery['smartflowId']}/daily")
        mine = [d for d in flow if d["deliveryId"] == did]
        assert sum(d["sent"] for d in mine) == kinds["sent"]
        assert sum(d["conversionsNumber"] for d in mine) == len(conversions)


def test_monthly_summary_equals_daily_results(api: httpx.Client) -> None:
    months = records(api, "/campaigns/monthly-summary")
    daily = every(api, "/campaigns/daily-results")
    sent = Counter()
    for d in daily:
        sent[d["date"][:7]] += d["sent"]
    assert {m["month"]: m["sent"] for m in months if m["sent"]} == {
        k: v for k, v in sent.items() if v
    }
    conversions = [c for c in every(api, "/conversions") if c["campaignId"] is not None]
    assert sum(m["conversionsNumber"] for m in months) == len(conversions)


def test_rfm_heatmaps_cells_and_contacts_agree(api: httpx.Client) -> None:
    window = {"dateFrom": "2025-07-01", "dateTo": "2026-06-30"}
    cells = records(api, "/rfm/cells", **window)
    total = sum(c["contactsCount"] for c in cells)
    assert total > 100
    for name, (x, y) in {
        "recency-frequency": ("r", "f"),
        "recency-monetary": ("r", "m"),
        "frequency-monetary": ("f", "m"),
    }.items():
        heat = records(api, f"/rfm/heatmap/{name}", **window)
        expected: Counter = Counter()
        for c in cells:
            expected[(c[x], c[y])] += c["contactsCount"]
        assert {(h[x], h[y]): h["contactsCount"] for h in heat} == dict(expected)
    cube = records(api, "/rfm/cube", **window)
    assert {(c["r"], c["f"], c["m"]): c["contactsCount"] for c in cube} == {
        (c["r"], c["f"], c["m"]): c["contactsCount"] for c in cells
    }
    for cell in cells[:5]:
        members = every(api, f"/rfm/cells/{cell['cell']}/contacts", **window)
        assert len(members) == cell["contactsCount"]
        assert sum(cents(m["monetary"]) for m in members) == cents(cell["monetary"])
        detail = get(api, f"/rfm/cells/{cell['cell']}", **window)
        assert detail["contactsCount"] == cell["contactsCount"]
        assert detail["minRecencyDays"] == min(m["recencyDays"] for m in members)
    segments = records(api, "/rfm/segments", **window)
    assert sum(s["contactsCount"] for s in segments) == total
    for dimension in ("recency", "frequency", "monetary"):
        buckets = records(api, f"/rfm/distribution/{dimension}", **window)
        sizes = [b["contactsCount"] for b in buckets]
        # NTILE(5): group sizes differ by at most one, the larger groups first
        assert sum(sizes) == total and max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)
    some = every(api, f"/rfm/cells/{cells[0]['cell']}/contacts", **window)[0]
    contact = get(api, f"/rfm/contacts/{some['contactId']}", **window)
    assert contact["hasOrders"] and contact["cell"] == cells[0]["cell"]
    assert contact["analysisDate"] == "2026-06-30"


def test_rfm_segment_rules(api: httpx.Client) -> None:
    names = {
        (1, 1): "Lost",
        (2, 2): "Hibernating",
        (1, 3): "At Risk",
        (2, 5): "Can't Lose Them",
        (3, 2): "About to Sleep",
        (3, 3): "Need Attention",
        (4, 5): "Loyal",
        (4, 1): "Promising",
        (5, 1): "New Customers",
        (5, 3): "Potential Loyalist",
        (5, 5): "Champions",
    }
    for cell in records(api, "/rfm/cells"):
        expected = names.get((cell["r"], cell["f"]))
        if expected:
            assert cell["segment"] == expected, cell


def test_contact_figures_agree_with_orders(api: httpx.Client) -> None:
    orders = every(api, "/orders")
    per_contact = Counter(o["contactId"] for o in orders)
    contacts = first(api, "/contacts", 200)
    for c in contacts:
        assert c["ordersCount"] == per_contact[c["contactId"]]
        assert instant(c["updatedAt"]) >= instant(c["createdAt"])


def test_recovered_carts_point_at_a_later_order_of_the_same_contact(api: httpx.Client) -> None:
    carts = [c for c in every(api, "/abandoned-carts") if c["recovered"]]
    assert carts
    for cart in carts[:30]:
        order = get(api, f"/orders/{cart['recoveredOrderId']}")
        assert order["contactId"] == cart["contactId"]
        created, ordered = instant(cart["createdAt"]), instant(order["createdAt"])
        assert timedelta(0) < ordered - created <= timedelta(days=7)


def test_attribution_matches_an_independent_reading_of_the_world(small_world) -> None:
    """Recompute attribution in Python from the world's orders and open events."""
    opens = defaultdict(list)
    for contact, send, at in small_world.rows(
        "SELECT contact_id, send_id, occurred_at FROM events WHERE event_type = 'opened'"
    ):
        opens[contact].append((send, at))
    expected = {}
    for order, contact, at in small_world.rows(
        "SELECT order_id, contact_id, created_at FROM orders"
    ):
        sends = [s for s, o in opens[contact] if at - timedelta(days=30) <= o < at]
        if sends:
            expected[order] = max(sends)
    actual = dict(small_world.rows("SELECT order_id, send_id FROM conversions"))
    assert actual == expected


def test_moving_today_forward_adds_late_conversions(small_world) -> None:
    standin = StandIn(small_world, today=date(2026, 3, 31))
    with client_for(standin) as api:
        window = {"dateFrom": "2026-03-01", "dateTo": "2026-03-31"}
        before = Counter(c["date"] for c in every(api, "/conversions", **window))
        activity_before = total_items(api, operation_at(CATALOGUE, "/deliveries/activity"))
        standin.set_today(date(2026, 4, 30))
        after = Counter(c["date"] for c in every(api, "/conversions", **window))
        activity_after = total_items(api, operation_at(CATALOGUE, "/deliveries/activity"))
    assert all(after[d] >= n for d, n in before.items())
    assert sum(after.values()) > sum(before.values()), "late conversions should appear"
    assert any(after[d] > before[d] for d in after if d <= "2026-03-25")
    assert activity_after > activity_before


def test_today_must_lie_in_the_horizon(small_world) -> None:
    with pytest.raises(ValueError, match="horizon"):
        StandIn(small_world, today=date(2030, 1, 1))
    standin = StandIn(small_world)
    with pytest.raises(ValueError, match="horizon"):
        standin.set_today(date(2024, 12, 31))
