"""The shop: product categories and products, orders with items, abandoned carts, and dialogs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from incomaker_elt.standin.calendar import DAY, HORIZON_DAYS, HORIZON_END_TS, HORIZON_START_TS
from incomaker_elt.standin.generation import MISSING, Columns, pick, run_positions
from incomaker_elt.standin.money import (
    COUNTRY_VAT_PER_MILLE,
    RATE_E4,
    add_vat,
    from_reference,
    remove_vat,
    to_reference,
)
from incomaker_elt.standin.scales import Scale

CATEGORY_TREE = {
    "Fashion": ["Shoes", "Jackets", "Accessories"],
    "Home": ["Kitchen", "Bedroom", "Garden"],
    "Sports": ["Running", "Cycling", "Outdoor"],
    "Beauty": ["Skin care", "Hair care", "Fragrance"],
    "Kids": ["Toys", "Clothing", "School"],
    "Electronics": ["Audio", "Phones", "Smart home"],
}
MODEL_WORDS = ("Classic", "Pro", "Lite", "Max", "Eco", "Urban", "Nova", "Prime", "Flex", "Terra")
DIALOG_TYPES = ("popup", "exit-intent", "banner", "form")
DIALOG_NAMES = ("Newsletter sign-up", "Spin the wheel", "Free shipping", "Exit offer", "Survey")


@dataclass(frozen=True)
class Shop:
    categories: Columns
    products: Columns
    orders: Columns
    order_items: Columns
    carts: Columns
    cart_items: Columns
    dialogs: Columns
    dialog_days: Columns


def _categories() -> Columns:
    ids, names, parents = [], [], []
    for top, children in CATEGORY_TREE.items():
        top_id = len(ids) + 1
        ids.append(top_id), names.append(top), parents.append(MISSING)
        for child in children:
            ids.append(len(ids) + 1), names.append(child), parents.append(top_id)
    return {
        "category_id": np.array(ids, dtype=np.int64),
        "name": np.array(names, dtype=object),
        "parent_category_id": np.array(parents, dtype=np.int64),
    }


def _products(rng: np.random.Generator, n: int, categories: Columns) -> tuple[Columns, np.ndarray]:
    leaves = categories["category_id"][categories["parent_category_id"] != MISSING]
    leaf_names = dict(zip(categories["category_id"], categories["name"], strict=True))
    # Most of the range is imported on the first day; the rest is launched over the horizon.
    launched = rng.random(n) < 0.2
    created = np.where(
        launched,
        HORIZON_START_TS + rng.integers(DAY, HORIZON_END_TS - HORIZON_START_TS, n),
        HORIZON_START_TS,
    )
    created.sort()
    category = leaves[rng.integers(0, len(leaves), n)]
    # Shelf prices end in 9 CZK: 99, 249, 1 299 ...
    price = (np.round(rng.lognormal(np.log(600), 0.8, n) / 10) * 10 - 1).clip(49, 49_999)
    price_cents = price.astype(np.int64) * 100
    changed = created + rng.integers(30 * DAY, 700 * DAY, n)
    retired = np.where(
        rng.random(n) < 0.08, created + rng.integers(60 * DAY, 800 * DAY, n), MISSING
    )
    words = pick(rng, MODEL_WORDS, n)
    names = np.array(
        [
            f"{leaf_names[c]} {w} {i + 1}"
            for i, (c, w) in enumerate(zip(category, words, strict=True))
        ],
        dtype=object,
    )
    descriptions = np.array(
        [
            f"{nm}: a {leaf_names[c].lower()} favourite from our {w.lower()} line."
            for nm, c, w in zip(names, category, words, strict=True)
        ],
        dtype=object,
    )
    # Popularity is skewed (a few best sellers), which gives "bought together" pairs substance.
    popularity = 1.0 / np.arange(1, n + 1) ** 0.9
    popularity = popularity[rng.permutation(n)]
    popularity /= popularity.sum()
    products = {
        "product_id": np.arange(1, n + 1, dtype=np.int64),
        "name": names,
        "category_id": category,
        "price_wtax": price_cents,
        "created_at": created,
        "changed_at": changed,
        "retired_at": retired,
        "description": descriptions,
    }
    return products, popularity


def _lines(
    rng: np.random.Generator,
    counts: np.ndarray,
    at: np.ndarray,
    products: Columns,
    popularity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Basket lines for baskets of `counts` lines made at `at`: owner index, line, product, qty."""
    owner = np.repeat(np.arange(len(counts)), counts)
    line = run_positions(counts) + 1
    product = rng.choice(len(popularity), len(owner), p=popularity)
    # A basket only holds products already on sale; swap the others for a day-one product.
    day_one = np.flatnonzero(products["created_at"] == HORIZON_START_TS)
    too_new = products["created_at"][product] >= at[owner]
    product[too_new] = day_one[rng.integers(0, len(day_one), int(too_new.sum()))]
    quantity = rng.choice(np.array([1, 2, 3]), len(owner), p=(0.75, 0.18, 0.07))
    return owner, line, product + 1, quantity


def _orders(
    rng: np.random.Generator,
    contacts: Columns,
    target: int,
    products: Columns,
    popularity: np.ndarray,
) -> tuple[Columns, Columns]:
    created_c = contacts["created_at"]
    remaining = (HORIZON_END_TS - created_c).astype(np.float64)
    # Customers differ a lot (RFM needs that): a gamma-mixed Poisson, scaled by time on the list.
    appetite = rng.gamma(0.8, 1 / 0.8, len(created_c))
    lam = appetite * remaining / remaining.mean() * target / len(created_c)
    per_contact = rng.poisson(lam)
    contact_idx = np.repeat(np.arange(len(created_c)), per_contact)
    at = (
        created_c[contact_idx]
        + 60
        + (rng.random(len(contact_idx)) * (remaining[contact_idx] - 60)).astype(np.int64)
    )
    order = np.argsort(at, kind="stable")
    contact_idx, at = contact_idx[order], at[order]
    n = len(at)
    country = contacts["country"][contact_idx]
    currency = contacts["currency"][contact_idx]
    vat = np.array([COUNTRY_VAT_PER_MILLE[c] for c in country], dtype=np.int64)
    rate = np.array([RATE_E4[c] for c in currency], dtype=np.int64)

    items_count = rng.choice(np.arange(1, 6), n, p=(0.45, 0.25, 0.15, 0.10, 0.05))
    owner, line, product, quantity = _lines(rng, items_count, at, products, popularity)
    unit = from_reference(products["price_wtax"][product - 1], rate[owner])
    line_wo = remove_vat(unit * quantity, vat[owner])
    starts = np.cumsum(items_count) - items_count
    order_wo = np.add.reduceat(line_wo, starts)
    order_w = add_vat(order_wo, vat)
    # Each line's price with VAT is rounded on its own; the last line takes the rounding
    # remainder so that the lines add up to the order exactly (docs/world.md, "Entities").
    line_w = add_vat(line_wo, vat[owner])
    last = starts + items_count - 1
    line_w[last] = 0
    line_w[last] = order_w - np.add.reduceat(line_w, starts)

    # Conversions are recorded late: most within two days, a tail up to 30 (docs/world.md).
    quick = rng.choice(np.array([0, 1, 2]), n, p=(0.5, 0.3, 0.2))
    delay = np.where(rng.random(n) < 0.85, quick, rng.integers(3, 31, n))
    orders = {
        "order_id": np.arange(1, n + 1, dtype=np.int64),
        "contact_id": contacts["contact_id"][contact_idx],
        "created_at": at,
        "country": country,
        "currency": currency,
        "amount_wo": order_wo,
        "amount_w": order_w,
        "amount_wo_ref": to_reference(order_wo, rate),
        "amount_w_ref": to_reference(order_w, rate),
        "items_count": items_count.astype(np.int64),
        "record_delay_days": delay.astype(np.int64),
    }
    items = {
        "order_id": owner.astype(np.int64) + 1,
        "line_number": line.astype(np.int64),
        "product_id": product.astype(np.int64),
        "quantity": quantity.astype(np.int64),
        "unit_price_w": unit,
        "amount_wo": line_wo,
        "amount_w": line_w,
        "amount_wo_ref": to_reference(line_wo, rate[owner]),
        "amount_w_ref": to_reference(line_w, rate[owner]),
    }
    return orders, items


def _carts(
    rng: np.random.Generator,
    n: int,
    contacts: Columns,
    orders: Columns,
    products: Columns,
    popularity: np.ndarray,
) -> tuple[Columns, Columns]:
    # Two in five carts come shortly before an order by the same contact (so some are
    # recovered); the rest are left at any time in the contact's life.
    before_order = rng.random(n) < 0.4
    order_pick = rng.integers(0, len(orders["order_id"]), n)
    contact_pick = rng.integers(0, len(contacts["contact_id"]), n)
    contact_idx = np.where(before_order, orders["contact_id"][order_pick] - 1, contact_pick)
    created_c = contacts["created_at"][contact_idx]
    near = orders["created_at"][order_pick] - rng.integers(3_600, 8 * DAY, n)
    anytime = created_c + (rng.random(n) * (HORIZON_END_TS - created_c)).astype(np.int64)
    at = np.maximum(np.where(before_order, near, anytime), created_c + 30)
    order = np.argsort(at, kind="stable")
    contact_idx, at = contact_idx[order], at[order]
    currency = contacts["currency"][contact_idx]
    rate = np.array([RATE_E4[c] for c in currency], dtype=np.int64)
    counts = rng.choice(np.arange(1, 5), n, p=(0.4, 0.3, 0.2, 0.1))
    owner, line, product, quantity = _lines(rng, counts, at, products, popularity)
    price = from_reference(products["price_wtax"][product - 1], rate[owner])
    amount = np.add.reduceat(price * quantity, np.cumsum(counts) - counts)
    carts = {
        "cart_id": np.arange(1, n + 1, dtype=np.int64),
        "contact_id": contacts["contact_id"][contact_idx],
        "created_at": at,
        "country": contacts["country"][contact_idx],
        "currency": currency,
        "amount_w": amount,
        "amount_w_ref": to_reference(amount, rate),
        "items_count": counts.astype(np.int64),
    }
    items = {
        "cart_id": owner.astype(np.int64) + 1,
        "line_number": line.astype(np.int64),
        "product_id": product.astype(np.int64),
        "quantity": quantity.astype(np.int64),
        "price_w": price,
    }
    return carts, items


def _dialogs(rng: np.random.Generator, n: int, views_per_day: int) -> tuple[Columns, Columns]:
    ids = np.arange(1, n + 1, dtype=np.int64)
    created = np.sort(HORIZON_START_TS + rng.integers(0, 400 * DAY, n))
    retired = np.where(
        rng.random(n) < 0.25, created + rng.integers(90 * DAY, 500 * DAY, n), MISSING
    )
    first_day = (created - HORIZON_START_TS) // DAY
    last_day = np.where(
        retired == MISSING,
        HORIZON_DAYS - 1,
        np.minimum((retired - HORIZON_START_TS) // DAY, HORIZON_DAYS - 1),
    )
    span = last_day - first_day + 1
    dialog = np.repeat(ids, span)
    day = run_positions(span) + np.repeat(first_day, span)
    reach = rng.uniform(0.3, 1.5, n)[dialog - 1]
    views = rng.poisson(views_per_day * reach)
    submissions = rng.binomial(views, rng.uniform(0.02, 0.12, n)[dialog - 1])
    closes = rng.binomial(views - submissions, 0.6)
    dialogs = {
        "dialog_id": ids,
        "name": np.array(
            [f"{DIALOG_NAMES[i % len(DIALOG_NAMES)]} #{i + 1}" for i in range(n)], dtype=object
        ),
        "type": pick(rng, DIALOG_TYPES, n),
        "created_at": created,
        "retired_at": retired,
    }
    days = {
        "day_ts": HORIZON_START_TS + day * DAY,
        "dialog_id": dialog,
        "views": views,
        "submissions": submissions,
        "closes": closes,
    }
    return dialogs, days


def generate_shop(rng: np.random.Generator, contacts: Columns, scale: Scale) -> Shop:
    categories = _categories()
    products, popularity = _products(rng, scale.products, categories)
    orders, items = _orders(rng, contacts, scale.orders, products, popularity)
    carts, cart_items = _carts(rng, scale.carts, contacts, orders, products, popularity)
    dialogs, dialog_days = _dialogs(rng, scale.dialogs, scale.dialog_views_per_day)
    return Shop(categories, products, orders, items, carts, cart_items, dialogs, dialog_days)
