"""Rating: the price of a quantity of units under a tariff, and its inverse.

Pure integer arithmetic. A charge for `units` starting at session position
`already` (units reported earlier in the same session):
  1. the first `free_units` of the session cost nothing;
  2. the chargeable quantity is rounded up to `rounding` units;
  3. each unit is priced by the time-of-day band that covers `at` (when one
     does) or else by the tier its session position falls in (tiers are
     cumulative over the session; without tiers, the tariff's `price`);
  4. the sum of unit prices, over `per`, is rounded up to a whole minor unit.
`affordable` is the largest grant whose cost fits in a sum of money.
"""

from __future__ import annotations

from .model import Plan, Tariff
from .units import ceil_div, round_up

DAY = 86400
MAX_COST = 1 << 62          # a charge saturates here: stored amounts hold 64 bits


def band_price(tariff: Tariff, plan: Plan, at: int) -> int | None:
    if not tariff.bands:
        return None
    local = at + plan.utc_offset_minutes * 60
    weekday = (local // DAY + 3) % 7        # 1970-01-01 was a Thursday (Monday = 0)
    minute = (local % DAY) // 60
    for band in tariff.bands:
        if band.covers(weekday, minute):
            return band.price
    return None


def _tiered(tariff: Tariff, start: int, quantity: int) -> int:
    """Sum of unit prices for positions [start, start + quantity)."""
    if not tariff.tiers:
        return quantity * tariff.price
    total = 0
    end = start + quantity
    bounds = [t.from_units for t in tariff.tiers[1:]] + [None]
    lo_price = tariff.price if tariff.tiers[0].from_units > 0 else None
    if lo_price is not None and start < tariff.tiers[0].from_units:
        seg = min(end, tariff.tiers[0].from_units) - start
        total += seg * lo_price
    for tier, upper in zip(tariff.tiers, bounds):
        lo = max(start, tier.from_units)
        hi = end if upper is None else min(end, upper)
        if hi > lo:
            total += (hi - lo) * tier.price
    return total


def cost(tariff: Tariff, plan: Plan, units: int, already: int, at: int) -> int:
    """Minor units charged for `units` at session position `already`, time `at`."""
    if units <= 0:
        return 0
    start = max(already, tariff.free_units)
    end = already + units
    if end <= start:
        return 0
    quantity = round_up(end - start, tariff.rounding)
    price = band_price(tariff, plan, at)
    numerator = quantity * price if price is not None else _tiered(tariff, start, quantity)
    return min(ceil_div(numerator, tariff.per), MAX_COST)


def affordable(tariff: Tariff, plan: Plan, money: int, wanted: int, already: int, at: int) -> int:
    """The most units, at most `wanted`, whose cost is at most `money`."""
    if wanted <= 0:
        return 0
    if cost(tariff, plan, wanted, already, at) <= money:
        return wanted
    lo, hi = 0, wanted            # cost(lo) <= money < cost(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(tariff, plan, mid, already, at) <= money:
            lo = mid
        else:
            hi = mid
    return lo


_described: dict = {}


def rate_description(tariff: Tariff, plan: Plan, at: int) -> dict:
    """The rate applied, for the rated event (shared: callers must not change it)."""
    if not tariff.bands:
        out = _described.get(id(tariff))
        if out is not None and out[0] is tariff:
            return out[1]
    band = band_price(tariff, plan, at)
    out = {"price": tariff.price if band is None else band, "per": tariff.per,
           "rounding": tariff.rounding}
    if band is not None:
        out["band"] = True
    if tariff.tiers:
        out["tiers"] = [[t.from_units, t.price] for t in tariff.tiers]
    if tariff.free_units:
        out["free_units"] = tariff.free_units
    if not tariff.bands:
        if len(_described) > 4096:
            _described.clear()
        _described[id(tariff)] = (tariff, out)      # holds the tariff: its id is not reused
    return out
