"""The comparison rules of the reconciliation checks, on hand-made figures."""

from datetime import date
from decimal import Decimal

from incomaker_elt.orchestration.partitions import day_ranges
from incomaker_elt.orchestration.reconciliation import compare, covers, split_settled


def test_equal_figures_have_no_difference() -> None:
    ours = {("CZK",): {"conversions": 3, "amount": Decimal("10.00")}}
    theirs = {("CZK",): {"conversions": 3, "amount": Decimal("10.0")}}
    assert compare(ours, theirs, ("conversions", "amount")) == []


def test_a_cent_is_a_difference_and_a_missing_key_counts_as_zeros() -> None:
    ours = {("CZK",): {"amount": Decimal("10.00")}, ("EUR",): {"amount": Decimal("1.00")}}
    theirs = {("CZK",): {"amount": Decimal("10.01")}, ("HUF",): {"amount": Decimal("5")}}
    found = {(d.key, d.warehouse, d.api) for d in compare(ours, theirs, ("amount",))}
    assert found == {
        (("CZK",), Decimal("10.00"), Decimal("10.01")),
        (("EUR",), Decimal("1.00"), 0),
        (("HUF",), 0, Decimal("5")),
    }


def test_where_the_warehouse_may_lag_only_an_excess_is_a_difference() -> None:
    ours = {("CZK",): {"conversions": 3}, ("EUR",): {"conversions": 5}}
    theirs = {("CZK",): {"conversions": 4}, ("EUR",): {"conversions": 4}}
    found = compare(ours, theirs, ("conversions",), warehouse_may_lag=True)
    assert [(d.key, d.warehouse, d.api) for d in found] == [(("EUR",), 5, 4)]


def test_partitions_become_contiguous_day_ranges() -> None:
    keys = {"2026-06-01", "2026-06-02", "2026-06-03", "2026-06-05", "2026-05-31"}
    assert day_ranges(keys) == [
        (date(2026, 5, 31), date(2026, 6, 3)),
        (date(2026, 6, 5), date(2026, 6, 5)),
    ]
    assert day_ranges(set()) == []


def test_ranges_are_cut_where_days_stop_being_settled() -> None:
    ranges = [(date(2026, 5, 1), date(2026, 6, 30)), (date(2026, 4, 1), date(2026, 4, 2))]
    parts = list(split_settled(ranges, date(2026, 5, 31)))
    assert parts == [
        (date(2026, 5, 1), date(2026, 5, 31), True),
        (date(2026, 6, 1), date(2026, 6, 30), False),
        (date(2026, 4, 1), date(2026, 4, 2), True),
    ]


def test_the_rfm_window_must_lie_inside_one_loaded_range() -> None:
    ranges = [(date(2025, 1, 1), date(2026, 6, 30))]
    assert covers(ranges, date(2025, 7, 1), date(2026, 6, 30))
    assert not covers(ranges, date(2024, 7, 1), date(2026, 6, 30))
    assert not covers([(date(2025, 1, 1), date(2025, 3, 1))], date(2025, 1, 1), date(2025, 4, 1))
