"""Rating arithmetic (ocs/charging/rating.py): a table of hand-computed prices
and a few properties (monotone prices, `affordable` is the true maximum)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.charging.model import Band, Plan, Tariff, Tier
from ocs.charging.rating import affordable, band_price, cost
from ocs.charging.units import UnitType

PLAN = Plan("p")
PLAN_UTC2 = Plan("p2", utc_offset_minutes=120)


def T(**kw) -> Tariff:
    return Tariff(context="c", unit=UnitType.TIME, **{"price": 2, **kw})


PEAK = (Band((0, 1, 2, 3, 4), 8 * 60, 18 * 60, 10),)        # weekdays 08:00-18:00 at 10

# (tariff, plan, units, already, at, expected minor units) -- arithmetic in the comment
COSTS = [
    (T(), PLAN, 100, 0, 0, 200),                                   # 100 x 2
    (T(), PLAN, 0, 0, 0, 0),
    (T(), PLAN, -5, 0, 0, 0),
    (T(price=5, per=1000), PLAN, 1, 0, 0, 1),                     # ceil(5 / 1000)
    (T(price=5, per=1000), PLAN, 200, 0, 0, 1),                   # ceil(1000 / 1000)
    (T(price=5, per=1000), PLAN, 201, 0, 0, 2),                   # ceil(1005 / 1000)
    (T(rounding=60), PLAN, 1, 0, 0, 120),                         # 60 x 2
    (T(rounding=60), PLAN, 60, 0, 0, 120),
    (T(rounding=60), PLAN, 61, 0, 0, 240),
    (T(free_units=30), PLAN, 20, 0, 0, 0),                        # all free
    (T(free_units=30), PLAN, 45, 0, 0, 30),                       # 15 x 2
    (T(free_units=30), PLAN, 20, 20, 0, 20),                      # positions 30..39: 10 x 2
    (T(free_units=30, rounding=60), PLAN, 45, 0, 0, 120),         # 15 -> 60 x 2
    (T(free_units=30, rounding=60), PLAN, 10, 40, 0, 120),        # 10 -> 60 x 2
    # below the first tier the tariff price applies: 5000 x 10 + 1000 x 4 = 54000 / 1000
    (T(price=10, per=1000, tiers=(Tier(5000, 4),)), PLAN, 6000, 0, 0, 54),
    (T(price=10, per=1000, tiers=(Tier(5000, 4),)), PLAN, 1000, 4500, 0, 7),   # 5000 + 2000
    (T(price=99, tiers=(Tier(0, 10), Tier(100, 5), Tier(200, 1))), PLAN, 300, 0, 0, 1600),
    (T(price=99, tiers=(Tier(0, 10), Tier(100, 5), Tier(200, 1))), PLAN, 150, 50, 0, 1000),
    (T(price=99, tiers=(Tier(0, 10), Tier(100, 5), Tier(200, 1))), PLAN, 10, 500, 0, 10),
    # tiers + free units: positions 100..149 at 5
    (T(price=99, free_units=100, tiers=(Tier(0, 10), Tier(100, 5))), PLAN, 150, 0, 0, 250),
    # bands: 1970-01-01 was a Thursday (weekday 3)
    (T(price=4, bands=PEAK), PLAN, 10, 0, 9 * 3600, 100),          # Thu 09:00 UTC
    (T(price=4, bands=PEAK), PLAN, 10, 0, 2 * 86400 + 9 * 3600, 40),    # Sat 09:00
    (T(price=4, bands=PEAK), PLAN, 10, 0, 3 * 86400 + 9 * 3600, 40),    # Sun 09:00
    (T(price=4, bands=PEAK), PLAN, 10, 0, 4 * 86400 + 9 * 3600, 100),   # Mon 09:00
    (T(price=4, bands=PEAK), PLAN, 10, 0, 18 * 3600, 40),         # 18:00 is outside [08, 18)
    (T(price=4, bands=PEAK), PLAN, 10, 0, 8 * 3600, 100),
    (T(price=4, bands=PEAK), PLAN_UTC2, 10, 0, 17 * 3600, 40),    # 17:00 UTC = 19:00 local
    (T(price=4, bands=PEAK), PLAN_UTC2, 10, 0, 7 * 3600, 100),    # 07:00 UTC = 09:00 local
    # Fri 23:00 UTC = Sat 01:00 local: a Saturday band applies, not Friday's
    (T(price=4, bands=(Band((5,), 0, 120, 1),)), PLAN_UTC2, 10, 0, 86400 + 23 * 3600, 10),
    # a band replaces tiers
    (T(price=4, tiers=(Tier(0, 7),), bands=PEAK), PLAN, 10, 0, 9 * 3600, 100),
    (T(price=4, tiers=(Tier(0, 7),), bands=PEAK), PLAN, 10, 0, 20 * 3600, 70),
]


@pytest.mark.parametrize("tariff, plan, units, already, at, expected", COSTS)
def test_cost(tariff, plan, units, already, at, expected):
    assert cost(tariff, plan, units, already, at) == expected


def test_band_price_outside_every_band_is_none():
    assert band_price(T(bands=PEAK), PLAN, 2 * 86400 + 9 * 3600) is None
    assert band_price(T(), PLAN, 0) is None


# (tariff, money, wanted, already, expected)
AFFORDABLE = [
    (T(price=5, per=1000), 7, 10000, 0, 1400),      # 1400 x 5 = 7000; 1401 -> 8
    (T(rounding=60), 300, 300, 0, 120),              # 120 s = 240; 121 s -> 360
    (T(), 1000, 300, 0, 300),                        # all of it
    (T(), 1000, 0, 0, 0),
    (T(), 0, 300, 0, 0),
    (T(free_units=30), 0, 100, 0, 30),               # only the free ones
    (T(free_units=30), 10, 100, 0, 35),
    (T(price=99, tiers=(Tier(0, 10), Tier(100, 1))), 1050, 1000, 0, 150),  # 1000 + 50 x 1
]


@pytest.mark.parametrize("tariff, money, wanted, already, expected", AFFORDABLE)
def test_affordable(tariff, money, wanted, already, expected):
    assert affordable(tariff, PLAN, money, wanted, already, 0) == expected


_tariffs = st.builds(
    lambda price, per, rounding, free, tiers: T(
        price=price, per=per, rounding=rounding, free_units=free,
        tiers=tuple(Tier(f, p) for f, p in sorted(tiers))),
    st.integers(0, 50), st.integers(1, 1000), st.integers(1, 100), st.integers(0, 200),
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 50)), max_size=3,
             unique_by=lambda t: t[0]))


@given(_tariffs, st.integers(0, 400), st.integers(0, 400), st.integers(0, 1000))
def test_cost_monotone_in_units(tariff, units, already, more):
    fewer = cost(tariff, PLAN, units, already, 0)
    assert 0 <= fewer <= cost(tariff, PLAN, units + more, already, 0)


@given(_tariffs, st.integers(0, 3000), st.integers(0, 300), st.integers(0, 300))
def test_affordable_is_the_maximum(tariff, money, wanted, already):
    a = affordable(tariff, PLAN, money, wanted, already, 0)
    assert 0 <= a <= wanted
    assert cost(tariff, PLAN, a, already, 0) <= money
    if a < wanted:
        assert cost(tariff, PLAN, a + 1, already, 0) > money


@given(_tariffs.map(lambda t: Tariff(t.context, t.unit, t.price, per=t.per, free_units=t.free_units,
                                     tiers=t.tiers)),
       st.integers(0, 500), st.integers(0, 500), st.integers(0, 500))
def test_split_charges_cost_at_most_one_minor_unit_more(tariff, a, b, already):
    """Without rounding, charging a then b costs the whole, up to one ceiling."""
    whole = cost(tariff, PLAN, a + b, already, 0)
    split = cost(tariff, PLAN, a, already, 0) + cost(tariff, PLAN, b, already + a, 0)
    assert whole <= split <= whole + 1
