"""Auth, parameter errors, determinism, faults, the request log, and the real HTTP server."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import orjson
import pytest
from api_pages import first_records, page_params

import incomaker_elt.standin as standin_package
from incomaker_elt.contract.catalogue import Catalogue, default_catalogue
from incomaker_elt.standin import Faults, RequestRecord, StandIn
from incomaker_elt.standin.world import _generate

CATALOGUE = default_catalogue()
ORDERS = CATALOGUE.get("orders")

TOKEN = {"Authorization": "Bearer standin-token"}


def client_for(standin: StandIn, **headers: str) -> httpx.Client:
    return httpx.Client(
        transport=standin.transport(), base_url="http://standin", headers={**TOKEN, **headers}
    )


@pytest.fixture(scope="module")
def standin(small_world) -> StandIn:
    return StandIn(small_world)


@pytest.fixture(scope="module")
def api(standin: StandIn) -> httpx.Client:
    with client_for(standin) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic standin-token"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_without_the_token_it_is_403(standin: StandIn, headers: dict[str, str]) -> None:
    with httpx.Client(transport=standin.transport(), base_url="http://standin") as client:
        response = client.get("/conversions/totals", headers=headers)
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"error"} and "bearer token" in body["error"]
    assert "standin-token" not in response.text


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/conversions/totals", {"dateFrom": "2026-13-01"}, "dateFrom"),
        ("/conversions/totals", {"dateTo": "yesterday"}, "dateTo"),
        ("/conversions/totals", {"dateFrom": "2026-02-01", "dateTo": "2026-01-01"}, "dateFrom"),
        ("/conversions/totals", {"currency": "CZK,XYZ"}, "currency"),
        ("/conversions", {"country": "US"}, "country"),
        ("/conversions/timeframe", {"timeframe": "fortnight"}, "timeframe"),
        ("/campaigns/daily-results", {"campaignId": "1,x"}, "campaignId"),
        ("/rfm/cube", {"r": "6"}, "r"),
        ("/campaigns/abc/recipients", {}, "campaignId"),
        ("/rfm/cells/960", {}, "cell"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    api: httpx.Client, path: str, params: dict[str, str], parameter: str
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "parameter"}
    assert body["parameter"] == parameter and parameter in body["error"]


def bad_paging_params(catalogue: Catalogue) -> list[tuple[dict[str, str], str]]:
    """Page sizes and positions a listing of the dialect refuses, with the parameter named."""
    paging = catalogue.get("orders").paging
    size = paging.size_param
    position = paging.offset_param if paging.style == "offset" else paging.page_param
    below = str(paging.first_page - 1) if paging.style == "page" else "-1"
    return [
        ({size: str(catalogue.max_page_size + 1)}, size),
        ({size: "0"}, size),
        ({position: below}, position),
        ({position: "first"}, position),
    ]


def test_bad_paging_parameters_are_400_in_every_dialect(small_world, dialect) -> None:
    name, catalogue, _ = dialect
    with client_for(StandIn(small_world, catalogue=catalogue)) as client:
        for params, parameter in bad_paging_params(catalogue):
            response = client.get("/orders", params=params)
            assert response.status_code == 400, (name, params, response.text)
            body = response.json()
            assert body["parameter"] == parameter and parameter in body["error"], (name, body)


def _responses(standin: StandIn) -> list[bytes]:
    def paged(name: str, index: int, size: int) -> tuple[str, dict[str, str]]:
        op = CATALOGUE.get(name)
        return op.path, page_params(op, index, size)

    paths = [
        ("/conversions/totals", {}),
        paged("conversions", 0, 500),
        paged("contacts", 2, 300),
        paged("campaigns_daily_results", 0, 1000),
        ("/rfm/cells", {}),
        ("/orders/10", {}),
        paged("abandoned_carts", 0, 200),
    ]
    with client_for(standin) as client:
        return [client.get(path, params=params).content for path, params in paths]


def test_same_seed_gives_byte_identical_responses(small_world) -> None:
    again = _generate(1, "small")  # a second, uncached world from the same seed
    assert again is not small_world
    assert _responses(StandIn(small_world)) == _responses(StandIn(again))
    other = _responses(StandIn(_generate(2, "small")))
    assert other != _responses(StandIn(small_world))
    assert sum(a != b for a, b in zip(other, _responses(StandIn(again)), strict=True)) >= 5


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_fault_header_gives_error_statuses(api: httpx.Client, status: int) -> None:
    response = api.get("/orders", headers={"X-Standin-Fault": str(status)})
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    if status == 429:
        assert response.headers["Retry-After"] == "1"


def test_fault_header_truncates_the_body(api: httpx.Client) -> None:
    fifty = page_params(ORDERS, 0, 50)
    whole = api.get("/orders", params=fifty).content
    cut = api.get("/orders", params=fifty, headers={"X-Standin-Fault": "truncate"})
    assert cut.status_code == 200
    assert cut.content == whole[: len(whole) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.content)


def test_fault_header_slows_the_answer(api: httpx.Client) -> None:
    started = time.perf_counter()
    response = api.get("/campaigns/senders", headers={"X-Standin-Fault": "slow=0.3"})
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_fault_header_drifts_the_schema(standin: StandIn, api: httpx.Client) -> None:
    with client_for(standin, **{"X-Standin-Fault": "drift"}) as drifting:
        for name in ("orders", "campaigns_by_language"):
            records = first_records(drifting, CATALOGUE.get(name), 20)
            assert records and all("loyaltyTier" in r for r in records), name
    detail = api.get("/orders/1", headers={"X-Standin-Fault": "drift"}).json()
    assert "loyaltyTier" in detail
    assert "loyaltyTier" not in api.get("/orders/1").json()


def test_unknown_fault_header_is_400(api: httpx.Client) -> None:
    response = api.get("/orders", headers={"X-Standin-Fault": "explode"})
    assert response.status_code == 400 and response.json()["parameter"] == "X-Standin-Fault"


def _statuses(standin: StandIn, n: int) -> list[int]:
    with client_for(standin) as client:
        return [client.get("/campaigns/senders").status_code for _ in range(n)]


def test_fault_rate_is_deterministic_and_near_the_rate(small_world) -> None:
    faults = Faults(rate=0.3, seed=7)
    first = _statuses(StandIn(small_world, faults=faults), 200)
    again = _statuses(StandIn(small_world, faults=faults), 200)
    assert first == again
    failed = sum(s != 200 for s in first)
    assert 35 <= failed <= 85
    assert set(first) - {200} <= {429, 500, 502, 503}
    other = _statuses(StandIn(small_world, faults=Faults(rate=0.3, seed=8)), 200)
    assert other != first
    assert [Faults(rate=0.3, seed=7).decide(n) for n in range(50)] == [
        Faults(rate=0.3, seed=7).decide(n) for n in range(50)
    ]


def test_fault_rate_with_one_kind(small_world) -> None:
    standin = StandIn(small_world, faults=Faults(rate=1.0, kinds=("429",), retry_after=3))
    with client_for(standin) as client:
        response = client.get("/campaigns/senders")
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    truncating = StandIn(small_world, faults=Faults(rate=1.0, kinds=("truncate",)))
    with client_for(truncating) as client:
        response = client.get("/campaigns/senders")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_drift_and_slow_by_constructor(small_world) -> None:
    drifting = StandIn(small_world, faults=Faults(drift=True))
    with client_for(drifting) as client:
        assert all("loyaltyTier" in r for r in first_records(client, ORDERS, 20))
    slow = StandIn(small_world, faults=Faults(rate=1.0, kinds=("slow",), slow_seconds=0.2))
    with client_for(slow) as client:
        started = time.perf_counter()
        assert client.get("/campaigns/senders").status_code == 200
        assert time.perf_counter() - started >= 0.2


def test_bad_fault_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        Faults(rate=1.5)
    with pytest.raises(ValueError, match="kinds"):
        Faults(kinds=("teapot",))


def test_every_request_is_logged(small_world) -> None:
    standin = StandIn(small_world)
    size = ORDERS.paging.size_param
    standin_package.clear_log()
    with client_for(standin) as client:
        client.get("/orders", params={"country": "CZ", size: 5})
        client.get("/orders", params={size: 5000})
        client.get("/missing")
    assert list(standin.request_log) == [
        RequestRecord("GET", "/orders", {"country": "CZ", size: "5"}, 200),
        RequestRecord("GET", "/orders", {size: "5000"}, 400),
        RequestRecord("GET", "/missing", {}, 404),
    ]
    assert len(standin_package.request_log) == 3
    standin_package.clear_log()
    standin.clear_log()
    assert len(standin_package.request_log) == 0 and len(standin.request_log) == 0


def test_real_http_server_answers_like_the_transport(standin: StandIn, api: httpx.Client) -> None:
    with standin.serve(host="127.0.0.1", port=0) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base_url, headers=TOKEN) as http:
            over_socket = http.get("/conversions/totals", params={"country": "CZ"})
            assert over_socket.status_code == 200
            assert (
                over_socket.content
                == api.get("/conversions/totals", params={"country": "CZ"}).content
            )
            assert http.get("/orders", headers={"Authorization": "Bearer no"}).status_code == 403
            size = ORDERS.paging.size_param
            assert http.get("/orders", params={size: 0}).json()["parameter"] == size
            with pytest.raises(httpx.ReadTimeout):
                http.get("/campaigns/senders", headers={"X-Standin-Fault": "slow=1"}, timeout=0.3)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base_url}/orders", headers=TOKEN, timeout=1)


def test_json_numbers_have_at_most_two_decimals(api: httpx.Client) -> None:
    body: Any = orjson.loads(api.get("/conversions/totals").content)
    assert body["conversions"]["currency"] == "CZK"
    text = api.get("/orders", params=page_params(ORDERS, 0, 200)).text
    assert "e-" not in text and "E+" not in text


def test_simulate_check_prints_the_totals(capsys: pytest.CaptureFixture[str]) -> None:
    from incomaker_elt.cli import main

    assert main(["simulate", "--check", "--port", "0", "--token", "cli-secret"]) == 0
    out = capsys.readouterr().out
    assert "Incomaker stand-in serving http://127.0.0.1:" in out
    assert "(seed 1, scale small, today 2026-06-30" in out
    totals = json.loads(out.splitlines()[-1])
    assert totals["conversions"]["currency"] == "CZK"
    assert "cli-secret" not in out


def test_simulate_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from incomaker_elt.cli import main

    assert main(["simulate", "--check", "--today", "2031-01-01"]) == 2
    assert main(["simulate", "--check", "--fault-kinds", "429,teapot"]) == 2
    assert "horizon" in capsys.readouterr().err
