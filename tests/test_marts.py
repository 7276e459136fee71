"""The marts against the stand-in's own truth.

The `small` world is ingested from the stand-in (in-process transport) into a temporary warehouse
and `dbt build` runs on it once for this module. Every figure is then compared with what the
stand-in computes from its world: its API answers (/conversions/totals with filters, delivery
detail, daily results, link clicks, RFM cells, segments, heatmaps, distributions, outliers) and,
for RFM, a recomputation in Python from the world's orders. None of it shares SQL with the marts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from api_pages import HEADERS, instant, operation_at, records_of

from incomaker_elt.contract.deliveries import DELIVERY_METRICS
from incomaker_elt.contract.paging import PageTotals, walk
from incomaker_elt.contract.settings import Settings
from incomaker_elt.orchestration import transform
from incomaker_elt.standin.dialect import integer_id

TODAY = date(2026, 6, 30)
HISTORY_START = date(2025, 1, 1)
TOKEN = "standin-token"
METRICS = DELIVERY_METRICS  # API field -> mart column
# /conversions/totals queries: API parameters and the same filter as macro arguments.
TOTALS_FILTERS = [
    {},
    {"dateFrom": "2026-01-01", "dateTo": "2026-03-31"},
    {"dateFrom": "2026-06-01", "dateTo": "2026-06-30", "country": "CZ,SK"},
    {"currency": "EUR,CZK"},
    {"dateFrom": "2025-07-01", "country": "DE", "currency": "EUR"},
    {"dateTo": "2025-12-31", "country": "HU,RO,PL"},
    {"country": "CH", "currency": "CZK"},  # nothing matches: zeros and an empty breakdown
]


@dataclass
class Built:
    path: Path
    settings: Settings
    summary: transform.BuildSummary
    totals_sql: str


class Api:
    """The stand-in called in-process, JSON numbers read as exact decimals; listings are paged
    in the dialect of the stand-in's catalogue."""

    def __init__(self, standin: Any) -> None:
        self.standin = standin

    def get(self, path: str, **params: str) -> Any:
        reply = self.standin.handle("GET", path, list(params.items()), HEADERS)
        assert reply.status == 200, f"{path} {params}: {reply.status} {reply.body[:300]!r}"
        return json.loads(reply.body, parse_float=Decimal)

    def records(self, path: str, **params: str) -> list[dict]:
        """The records of an unpaged answer, where the catalogue says they are."""
        return records_of(operation_at(self.standin.catalogue, path), self.get(path, **params))

    def all(self, path: str, **params: str) -> list[dict]:
        """Every record of the listing at `path`, all pages."""
        op = operation_at(self.standin.catalogue, path)

        def fetch(at: str, query: dict[str, str]) -> tuple[Any, int, PageTotals]:
            body = self.get(at, **query)
            return body, len(records_of(op, body)), op.paging.totals(body)

        return [
            r for body in walk(op.paging, fetch, path, params, 1000) for r in records_of(op, body)
        ]


def plain_id(field: str, value: Any) -> Any:
    """An id as the world numbers it: the API shows campaign and smartflow ids as UUIDs, the
    marts may keep either."""
    if isinstance(value, str):
        number = integer_id(field, value)
        if number is not None:
            return number
        if value.isdigit():
            return int(value)
    return value


def delivery_of(key: str) -> tuple[str, Any]:
    """A delivery_key (`campaign-<id>` or `delivery-<id>`) as (kind, plain id)."""
    kind, _, value = key.partition("-")
    return kind, plain_id("campaignId" if kind == "campaign" else "deliveryId", value)


def as_utc(value: datetime) -> datetime:
    """A warehouse timestamp as a UTC instant (naive ones are UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@pytest.fixture(scope="module")
def standin(small_world):
    from incomaker_elt.standin.service import StandIn

    return StandIn(small_world, today=TODAY, token=TOKEN)


@pytest.fixture(scope="module")
def api(standin) -> Api:
    return Api(standin)


def _macro_call(params: dict[str, str]) -> str:
    args = []
    if "dateFrom" in params:
        args.append(f"date_from='{params['dateFrom']}'")
    if "dateTo" in params:
        args.append(f"date_to='{params['dateTo']}'")
    if "country" in params:
        args.append(f"countries={params['country'].split(',')}")
    if "currency" in params:
        args.append(f"currencies={params['currency'].split(',')}")
    return f"{{{{ conversion_totals({', '.join(args)}) }}}}"


def _compile_totals(settings: Settings) -> str:
    """One query answering every TOTALS_FILTERS entry, compiled from the macro by dbt."""
    parts = [
        f"select {i} as filter_index, * from ({_macro_call(p)})"
        for i, p in enumerate(TOTALS_FILTERS)
    ]
    inline = " union all by name ".join(parts)
    run = transform.run_dbt(settings, ["compile", "--inline", inline])
    assert run.error is None, run.error
    return run.results[0]["compiled_code"]


@pytest.fixture(scope="module")
def built(full_load) -> Built:
    """The session's fresh full load (tests/conftest.py `full_load`: the stand-in at TODAY loaded
    from HISTORY_START, then `dbt build`), read only, and the totals query compiled on it."""
    assert (full_load.today, full_load.start) == (TODAY, HISTORY_START)
    totals_sql = _compile_totals(full_load.settings)
    return Built(full_load.warehouse, full_load.settings, full_load.build, totals_sql)


def rows(built: Built, sql: str) -> list[dict]:
    with duckdb.connect(str(built.path), read_only=True) as con:
        relation = con.sql(sql)
        names = relation.columns
        return [dict(zip(names, r, strict=True)) for r in relation.fetchall()]


# ----------------------------------------------------------------------------- the build


def test_dbt_build_passes_without_warnings(built: Built) -> None:
    counts = built.summary.counts
    assert counts.get("success", 0) >= 100 and counts.get("pass", 0) >= 150, counts
    assert set(counts) <= {"success", "pass"}, counts
    # the warn-only checks: the API's attribution and RFM snapshots are reproduced
    assert not built.summary.warnings, built.summary.warnings


def test_marts_are_not_empty(built: Built) -> None:
    for mart in (
        "fct_conversions",
        "conversions_daily",
        "fct_delivery_performance",
        "delivery_daily",
        "delivery_by_language",
        "delivery_link_clicks",
        "smartflow_daily",
        "rfm_contacts",
        "rfm_segments_vs_api",
        "rfm_contacts_vs_api",
        "dim_contacts",
        "dim_products",
        "dim_campaigns",
        "fct_orders",
        "fct_order_items",
        "fct_abandoned_carts",
    ):
        assert rows(built, f"select count(*) as n from marts.{mart}")[0]["n"] > 0, mart


# ----------------------------------------------------------------------------- conversions


def _aggregate_from_row(row: dict) -> dict:
    """A conversion_totals row in the shape of the API's ConversionAggregate."""
    return {
        "uniqueContacts": row["unique_contacts"],
        "averageUniqueConversion": row["average_unique_conversion"],
        "conversions": {
            "conversionsAmountWoTax": row["conversions_amount_wo_tax"],
            "conversionsAmountWTax": row["conversions_amount_w_tax"],
            "conversionsNumber": row["conversions_number"],
            "currency": row["currency"],
            "averageConversion": row["average_conversion"],
            "breakdown": [
                {
                    "currency": b["currency"],
                    "conversionsAmountWoTax": b["conversions_amount_wo_tax"],
                    "conversionsAmountWTax": b["conversions_amount_w_tax"],
                    "conversionsNumber": b["conversions_number"],
                    "averageConversion": b["average_conversion"],
                    "conversionAmountWoTaxReference": b["conversion_amount_wo_tax_reference"],
                    "conversionAmountWTaxReference": b["conversion_amount_w_tax_reference"],
                }
                for b in row["breakdown"]
            ],
        },
    }


@pytest.mark.parametrize("index", range(len(TOTALS_FILTERS)))
def test_conversion_totals_equal_the_api_for_windows_and_filters(
    built: Built, api: Api, index: int
) -> None:
    params = TOTALS_FILTERS[index]
    ours = rows(built, f"select * from ({built.totals_sql}) where filter_index = {index}")
    assert len(ours) == 1
    expected = api.get("/conversions/totals", **params)
    assert _aggregate_from_row(ours[0]) == expected, params


def test_conversion_totals_mart_is_the_whole_history(built: Built, api: Api) -> None:
    ours = rows(built, "select * from marts.conversion_totals")
    assert _aggregate_from_row(ours[0]) == api.get("/conversions/totals")
    assert ours[0]["conversions_number"] > 100


def test_filters_select_something(built: Built) -> None:
    """Guard against vacuous comparisons: most filters match conversions."""
    numbers = rows(built, f"select conversions_number from ({built.totals_sql})")
    assert sum(1 for r in numbers if r["conversions_number"] > 0) >= len(TOTALS_FILTERS) - 1


def test_fct_conversions_are_the_apis_conversion_list(built: Built, api: Api) -> None:
    listed = api.all("/conversions")
    ours = {
        r["conversion_id"]: r
        for r in rows(
            built,
            "select conversion_id, order_id, campaign_id, delivery_id, conversion_date, "
            "currency, conversion_amount_w_tax_reference, send_id from marts.fct_conversions",
        )
    }
    assert set(ours) == {c["conversionId"] for c in listed}
    for c in listed:
        row = ours[c["conversionId"]]
        assert (
            row["order_id"],
            plain_id("campaignId", row["campaign_id"]),
            row["delivery_id"],
        ) == (
            c["orderId"],
            plain_id("campaignId", c["campaignId"]),
            c["deliveryId"],
        )
        assert row["conversion_date"].isoformat() == c["date"]
        assert row["conversion_amount_w_tax_reference"] == c["conversionAmountWTaxReference"]
        assert row["send_id"] is not None  # our attribution reproduces the API's


def test_conversions_daily_matches_conversions_history(built: Built, api: Api) -> None:
    history = api.all("/conversions/history")
    ours = rows(
        built,
        "select conversion_date, sum(conversions_number) as n, "
        "sum(conversions_amount_w_tax_reference) as w from marts.conversions_daily group by 1",
    )
    got = {r["conversion_date"].isoformat(): (r["n"], r["w"]) for r in ours}
    expected = {
        h["date"]: (h["conversionsNumber"], h["conversionAmountWTaxReference"]) for h in history
    }
    assert got == expected


# ----------------------------------------------------------------------------- delivery


def _performance(built: Built) -> dict[str, dict]:
    return {
        delivery_of(r["delivery_key"]): r
        for r in rows(built, "select * from marts.fct_delivery_performance")
    }


def test_smartflow_delivery_performance_equals_delivery_detail(built: Built, api: Api) -> None:
    performance = _performance(built)
    deliveries = api.all("/deliveries")
    assert deliveries
    for delivery in deliveries:
        detail = api.get(f"/deliveries/{delivery['deliveryId']}")
        ours = performance[("delivery", delivery["deliveryId"])]
        for field, column in METRICS.items():
            assert ours[column] == detail[field], (delivery["deliveryId"], field)
        assert ours["conversions"] == detail["conversionsNumber"]
        assert ours["revenue_wo_tax_reference"] == detail["conversionAmountWoTaxReference"]
        assert ours["revenue_w_tax_reference"] == detail["conversionAmountWTaxReference"]
        assert plain_id("smartflowId", ours["smartflow_id"]) == plain_id(
            "smartflowId", detail["smartflowId"]
        )


def test_campaign_performance_equals_recipients_and_conversions(built: Built, api: Api) -> None:
    performance = _performance(built)
    campaigns = api.all("/campaigns")
    assert campaigns
    for campaign in campaigns:
        cid = campaign["campaignId"]
        recipients = api.all(f"/campaigns/{cid}/recipients")
        conversions = api.all(f"/campaigns/{cid}/conversions")
        ours = performance[("campaign", plain_id("campaignId", cid))]
        expected = {
            "sent": len(recipients),
            "delivered": sum(r["delivered"] for r in recipients),
            "bounced": sum(r["bounced"] for r in recipients),
            "opens": sum(r["opens"] for r in recipients),
            "unique_opens": sum(r["opens"] > 0 for r in recipients),
            "clicks": sum(r["clicks"] for r in recipients),
            "unique_clicks": sum(r["clicks"] > 0 for r in recipients),
            "unsubscribes": sum(r["unsubscribed"] for r in recipients),
            "conversions": len(conversions),
            "revenue_w_tax_reference": sum(
                (c["conversionAmountWTaxReference"] for c in conversions), Decimal(0)
            ),
        }
        assert {k: ours[k] for k in expected} == expected, cid


def test_rates_use_their_documented_denominators(built: Built) -> None:
    for r in _performance(built).values():
        if not r["delivered"]:
            continue
        assert r["delivery_rate"] == pytest.approx(r["delivered"] / r["sent"], abs=1e-6)
        assert r["open_rate"] == pytest.approx(r["unique_opens"] / r["delivered"], abs=1e-6)
        assert r["click_rate"] == pytest.approx(r["unique_clicks"] / r["delivered"], abs=1e-6)
        assert r["unsubscribe_rate"] == pytest.approx(r["unsubscribes"] / r["delivered"], abs=1e-6)
        assert r["conversion_rate"] == pytest.approx(
            r["converted_contacts"] / r["delivered_contacts"], abs=1e-6
        )


def test_delivery_daily_equals_daily_results(built: Built, api: Api) -> None:
    window = {"dateFrom": HISTORY_START.isoformat(), "dateTo": TODAY.isoformat()}
    expected = {}
    for r in api.all("/campaigns/daily-results", **window):
        key = ("campaign", plain_id("campaignId", r["campaignId"]))
        expected[(r["date"], key)] = {c: r[f] for f, c in METRICS.items()}
    for r in api.all("/deliveries/daily-results", **window):
        expected[(r["date"], ("delivery", r["deliveryId"]))] = {c: r[f] for f, c in METRICS.items()}
    columns = ", ".join(METRICS.values())
    ours = {
        (r["date_day"].isoformat(), delivery_of(r["delivery_key"])): {
            c: r[c] for c in METRICS.values()
        }
        for r in rows(
            built,
            f"select date_day, delivery_key, {columns} from marts.delivery_daily "
            f"where {' + '.join(METRICS.values())} > 0",
        )
    }
    assert len(expected) > 100
    assert ours == expected


def test_smartflow_daily_equals_smartflow_daily_detail(built: Built, api: Api) -> None:
    fields = {
        "sent": "sent",
        "delivered": "delivered",
        "opened": "opens",
        "clicked": "clicks",
        "unsubscribed": "unsubscribes",
        "conversionsNumber": "conversions",
        "conversionAmountWTaxReference": "revenue_w_tax_reference",
    }
    window = {"dateFrom": HISTORY_START.isoformat(), "dateTo": TODAY.isoformat()}
    expected: dict[tuple, dict] = {}
    for smartflow_id in sorted({d["smartflowId"] for d in api.all("/deliveries")}):
        detail = api.records(f"/deliveries/smartflows/{smartflow_id}/daily", **window)
        flow = plain_id("smartflowId", smartflow_id)
        for day in detail:
            totals = expected.setdefault((flow, day["date"]), defaultdict(int))
            for f, c in fields.items():
                totals[c] += day[f]
    ours = {
        (plain_id("smartflowId", r["smartflow_id"]), r["date_day"].isoformat()): {
            c: r[c] for c in fields.values()
        }
        for r in rows(built, "select * from marts.smartflow_daily")
    }
    assert ours == {k: dict(v) for k, v in expected.items()}


def test_link_clicks_equal_the_apis(built: Built, api: Api) -> None:
    expected = {}
    for campaign in api.all("/campaigns"):
        for link in api.records(f"/campaigns/{campaign['campaignId']}/links"):
            key = (("campaign", plain_id("campaignId", campaign["campaignId"])), link["url"])
            expected[key] = (link["clicks"], link["uniqueClicks"])
    for sent in api.all("/deliveries"):
        for link in api.records(f"/deliveries/{sent['deliveryId']}/links"):
            key = (("delivery", sent["deliveryId"]), link["url"])
            expected[key] = (link["clicks"], link["uniqueClicks"])
    ours = {
        (delivery_of(r["delivery_key"]), r["url"]): (r["clicks"], r["unique_clicks"])
        for r in rows(built, "select * from marts.delivery_link_clicks")
    }
    assert expected and ours == expected


def test_delivery_by_language_equals_the_apis(built: Built, api: Api) -> None:
    ours = {
        (r["delivery_type"], r["language"]): r
        for r in rows(built, "select * from marts.delivery_by_language")
    }
    for delivery_type, path, count_field in (
        ("campaign", "/campaigns/languages", "campaignsCount"),
        ("smartflow", "/deliveries/languages", "deliveriesCount"),
    ):
        for language in api.records(path):
            row = ours[(delivery_type, language["language"])]
            assert row["deliveries_count"] == language[count_field]
            for field, column in METRICS.items():
                assert row[column] == language[field], (delivery_type, language, field)


# ----------------------------------------------------------------------------- RFM


@pytest.fixture(scope="module")
def rfm_window(built: Built) -> dict[str, str]:
    window = rows(
        built, "select analysis_date, window_start from intermediate.int_rfm__window_resolved"
    )
    assert window[0]["analysis_date"] == TODAY  # the latest order is on the ingestion's today
    return {
        "dateFrom": window[0]["window_start"].isoformat(),
        "dateTo": window[0]["analysis_date"].isoformat(),
    }


def _rfm_contacts(built: Built) -> dict[int, dict]:
    return {r["contact_id"]: r for r in rows(built, "select * from marts.rfm_contacts")}


def test_rfm_contacts_equal_the_apis_cell_contacts(built: Built, api: Api, rfm_window) -> None:
    ours = _rfm_contacts(built)
    cells = api.records("/rfm/cells", **rfm_window)
    expected = {}
    for cell in cells:
        for contact in api.all(f"/rfm/cells/{cell['cell']}/contacts", **rfm_window):
            expected[contact["contactId"]] = (
                contact["cell"],
                cell["segment"],
                contact["recencyDays"],
                contact["frequency"],
                contact["monetary"],
            )
    got = {
        cid: (r["cell"], r["segment"], r["recency_days"], r["frequency"], r["monetary"])
        for cid, r in ours.items()
    }
    assert len(expected) > 500
    assert got == expected


def test_rfm_figures_equal_a_recomputation_from_the_worlds_orders(
    built: Built, small_world, rfm_window
) -> None:
    """Recency, frequency, monetary and the NTILE scores, in Python from the world's orders."""
    first = date.fromisoformat(rfm_window["dateFrom"])
    last = date.fromisoformat(rfm_window["dateTo"])
    cutoff = datetime.combine(TODAY + timedelta(days=1), datetime.min.time())
    bought: dict[int, list] = {}
    for contact_id, created_at, amount_wo_ref in small_world.rows(
        "select contact_id, created_at, amount_wo_ref from orders"
    ):
        if created_at >= cutoff or not first <= created_at.date() <= last:
            continue
        entry = bought.setdefault(contact_id, [date.min, 0, 0])
        entry[0] = max(entry[0], created_at.date())
        entry[1] += 1
        entry[2] += amount_wo_ref
    metrics = {
        cid: ((last - latest).days, n, Decimal(cents) / 100)
        for cid, (latest, n, cents) in bought.items()
    }

    def ntile(order: list[int]) -> dict[int, int]:
        n, scores, start = len(order), {}, 0
        for group in range(5):
            size = n // 5 + (1 if group < n % 5 else 0)
            for cid in order[start : start + size]:
                scores[cid] = group + 1
            start += size
        return scores

    r = ntile(sorted(metrics, key=lambda c: (-metrics[c][0], c)))
    f = ntile(sorted(metrics, key=lambda c: (metrics[c][1], c)))
    m = ntile(sorted(metrics, key=lambda c: (metrics[c][2], c)))
    ours = _rfm_contacts(built)
    assert set(ours) == set(metrics)
    for cid, (recency, frequency, monetary) in metrics.items():
        row = ours[cid]
        assert (row["recency_days"], row["frequency"], row["monetary"]) == (
            recency,
            frequency,
            monetary,
        ), cid
        assert (row["r_score"], row["f_score"], row["m_score"]) == (r[cid], f[cid], m[cid]), cid


def test_rfm_contact_detail_agrees(built: Built, api: Api, rfm_window) -> None:
    ours = _rfm_contacts(built)
    for cid in sorted(ours)[:: max(1, len(ours) // 40)]:
        detail = api.get(f"/rfm/contacts/{cid}", **rfm_window)
        row = ours[cid]
        assert detail["hasOrders"]
        assert (row["r_score"], row["f_score"], row["m_score"], row["segment"]) == (
            detail["r"],
            detail["f"],
            detail["m"],
            detail["segment"],
        )
        assert as_utc(row["first_order_at"]) == instant(detail["firstOrderAt"]), cid


def test_rfm_segments_equal_the_apis(built: Built, api: Api, rfm_window) -> None:
    expected = {s["segment"]: s for s in api.records("/rfm/segments", **rfm_window)}
    ours = {
        r["segment"]: r
        for r in rows(built, "select * from marts.rfm_segments where contacts_count > 0")
    }
    assert set(ours) == set(expected)
    for name, s in expected.items():
        row = ours[name]
        assert (
            row["contacts_count"],
            row["share"],
            row["monetary"],
            row["average_recency_days"],
            row["average_frequency"],
            row["average_monetary"],
        ) == (
            s["contactsCount"],
            s["share"],
            s["monetary"],
            s["averageRecencyDays"],
            s["averageFrequency"],
            s["averageMonetary"],
        ), name


@pytest.mark.parametrize(
    ("mart", "path", "x", "y"),
    [
        ("rfm_heatmap_rf", "/rfm/heatmap/recency-frequency", "r", "f"),
        ("rfm_heatmap_rm", "/rfm/heatmap/recency-monetary", "r", "m"),
        ("rfm_heatmap_fm", "/rfm/heatmap/frequency-monetary", "f", "m"),
    ],
)
def test_rfm_heatmaps_equal_the_apis(
    built: Built, api: Api, rfm_window, mart: str, path: str, x: str, y: str
) -> None:
    expected = {
        (c[x], c[y]): (c["contactsCount"], c["monetary"]) for c in api.records(path, **rfm_window)
    }
    ours = {
        (r[f"{x}_score"], r[f"{y}_score"]): (r["contacts_count"], r["monetary"])
        for r in rows(built, f"select * from marts.{mart} where contacts_count > 0")
    }
    assert ours == expected
    assert len(rows(built, f"select * from marts.{mart}")) == 25


def test_rfm_distributions_equal_the_apis(built: Built, api: Api, rfm_window) -> None:
    expected = {
        (b["dimension"], b["score"]): (b["minValue"], b["maxValue"], b["contactsCount"])
        for b in api.records("/rfm/distributions", **rfm_window)
    }
    ours = {
        (r["dimension"], r["score"]): (r["min_value"], r["max_value"], r["contacts_count"])
        for r in rows(built, "select * from marts.rfm_distributions")
    }
    assert ours == expected


def test_rfm_outliers_and_review_candidates_equal_the_apis(
    built: Built, api: Api, rfm_window
) -> None:
    ours = _rfm_contacts(built)
    outliers = api.all("/rfm/outliers", **rfm_window)
    assert outliers, "the small world has whales"
    assert {c for c, r in ours.items() if r["is_outlier"]} == {o["contactId"] for o in outliers}
    assert {r["outlier_threshold"] for r in ours.values()} == {outliers[0]["threshold"]}
    candidates = api.all("/rfm/review-candidates", **rfm_window)
    assert {c for c, r in ours.items() if r["is_review_candidate"]} == {
        c["contactId"] for c in candidates
    }


def test_rfm_comparison_marts_match(built: Built) -> None:
    segments = rows(built, "select * from marts.rfm_segments_vs_api")
    assert segments and all(r["matches_api"] for r in segments)
    contacts = rows(built, "select count(*) as n from marts.rfm_contacts_vs_api where matches_api")
    assert contacts[0]["n"] > 500


# ----------------------------------------------------------------------------- dimensions


def test_orders_and_carts_equal_the_world(built: Built, small_world) -> None:
    cutoff = datetime.combine(TODAY + timedelta(days=1), datetime.min.time())
    world_orders = small_world.rows(
        "select count(*), sum(amount_w_ref) from orders where created_at < $cutoff",
        {"cutoff": cutoff},
    )[0]
    ours = rows(
        built, "select count(*) as n, sum(amount_w_tax_reference) as w from marts.fct_orders"
    )[0]
    assert (ours["n"], ours["w"]) == (world_orders[0], Decimal(world_orders[1]) / 100)
    world_carts = dict(
        small_world.rows(
            "select cart_id, case when recovered_at < $cutoff then recovered_order_id end "
            "from carts where created_at < $cutoff",
            {"cutoff": cutoff},
        )
    )
    carts = {
        r["cart_id"]: r["recovered_order_id"]
        for r in rows(built, "select cart_id, recovered_order_id from marts.fct_abandoned_carts")
    }
    assert carts == world_carts
    assert any(carts.values())
