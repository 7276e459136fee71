"""How big each world is. Counts are targets; the generated world lands near them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    contacts: int
    orders: int
    campaign_sends: int
    delivery_sends: int
    campaigns: int
    smartflows: int
    segments: int
    products: int
    carts: int
    dialogs: int
    dialog_views_per_day: int


SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale("small", 2_000, 5_000, 6_000, 4_000, 30, 3, 8, 120, 1_000, 5, 60),
        Scale("medium", 20_000, 100_000, 60_000, 40_000, 60, 5, 15, 500, 10_000, 10, 400),
        Scale("large", 200_000, 1_000_000, 480_000, 320_000, 100, 8, 25, 2_000, 100_000, 20, 3_000),
    )
}


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}") from None
