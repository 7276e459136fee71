"""Currencies, VAT and rounding (docs/world.md, "Money").

Amounts are integer hundredths (cents) from generation to the JSON encoder, so every sum and every
half-up rounding is exact; they become JSON numbers only when a response is written.
"""

from __future__ import annotations

import numpy as np

from incomaker_elt.contract.currency import REFERENCE_CURRENCY

COUNTRIES = ("CZ", "SK", "AT", "DE", "HU", "RO", "CH", "PL")
COUNTRY_CURRENCY = {
    "CZ": "CZK",
    "SK": "EUR",
    "AT": "EUR",
    "DE": "EUR",
    "HU": "HUF",
    "RO": "RON",
    "CH": "CHF",
    "PL": "PLN",
}
# VAT in per mille, so Swiss 8.1 % stays an integer.
COUNTRY_VAT_PER_MILLE = {
    "CZ": 210,
    "SK": 230,
    "AT": 200,
    "DE": 190,
    "HU": 270,
    "RO": 190,
    "CH": 81,
    "PL": 230,
}
# Rates to the reference currency in units of 1/10,000, so HUF 0.0614 stays an integer.
RATE_E4 = {"CZK": 10_000, "EUR": 249_200, "HUF": 614, "RON": 48_600, "CHF": 267_200, "PLN": 58_500}
CURRENCIES = tuple(RATE_E4)
assert REFERENCE_CURRENCY == "CZK" and RATE_E4[REFERENCE_CURRENCY] == 10_000


def half_up_div(numerator: np.ndarray | int, denominator: np.ndarray | int) -> np.ndarray | int:
    """numerator / denominator rounded half up, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def to_reference(cents: np.ndarray, rate_e4: np.ndarray | int) -> np.ndarray:
    """Amount in the reference currency, rounded half up per row."""
    return half_up_div(cents * rate_e4, 10_000)


def from_reference(czk_cents: np.ndarray, rate_e4: np.ndarray | int) -> np.ndarray:
    """A CZK price list amount converted into another currency, rounded half up."""
    return half_up_div(czk_cents * 10_000, rate_e4)


def add_vat(cents: np.ndarray, vat_per_mille: np.ndarray | int) -> np.ndarray:
    return half_up_div(cents * (1000 + vat_per_mille), 1000)


def remove_vat(cents: np.ndarray, vat_per_mille: np.ndarray | int) -> np.ndarray:
    return half_up_div(cents * 1000, 1000 + vat_per_mille)
