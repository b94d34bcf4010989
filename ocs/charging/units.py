"""Units and money: the integer quantities the engine rates, reserves and debits.

Invariants: every quantity is a Python int (seconds, octets, service-specific
units, or minor currency units); nothing here is ever a float. Unit types are
the RFC 4006 §8.32 CC-Unit-Type values, so a GSU/RSU/USU maps to them one to
one. Currencies are ISO 4217 (numeric code for Currency-Code §8.11, exponent
for Unit-Value §8.8).
"""

from __future__ import annotations

import enum


class UnitType(enum.IntEnum):
    """CC-Unit-Type (RFC 4006 §8.32)."""

    TIME = 0
    MONEY = 1
    TOTAL_OCTETS = 2
    INPUT_OCTETS = 3
    OUTPUT_OCTETS = 4
    SERVICE_SPECIFIC_UNITS = 5


# record and config spelling <-> unit type
UNIT_NAMES = {
    "time": UnitType.TIME,
    "money": UnitType.MONEY,
    "total_octets": UnitType.TOTAL_OCTETS,
    "input_octets": UnitType.INPUT_OCTETS,
    "output_octets": UnitType.OUTPUT_OCTETS,
    "service_specific_units": UnitType.SERVICE_SPECIFIC_UNITS,
}
UNIT_SPELLING = {v: k for k, v in UNIT_NAMES.items()}

# the AVP inside Granted/Requested/Used-Service-Unit that carries each type
UNIT_AVPS = {
    UnitType.TIME: "CC-Time",
    UnitType.MONEY: "CC-Money",
    UnitType.TOTAL_OCTETS: "CC-Total-Octets",
    UnitType.INPUT_OCTETS: "CC-Input-Octets",
    UnitType.OUTPUT_OCTETS: "CC-Output-Octets",
    UnitType.SERVICE_SPECIFIC_UNITS: "CC-Service-Specific-Units",
}


def unit_type(name: str) -> UnitType:
    try:
        return UNIT_NAMES[name]
    except KeyError:
        raise ValueError(f"unknown unit {name!r}; expected one of {', '.join(UNIT_NAMES)}") from None


# ISO 4217: alphabetic code -> (numeric code, minor-unit exponent)
CURRENCIES = {
    "EUR": (978, 2), "USD": (840, 2), "GBP": (826, 2), "SEK": (752, 2), "NOK": (578, 2),
    "DKK": (208, 2), "CHF": (756, 2), "PLN": (985, 2), "CZK": (203, 2), "HUF": (348, 2),
    "JPY": (392, 0), "KRW": (410, 0), "CNY": (156, 2), "INR": (356, 2), "BRL": (986, 2),
    "CAD": (124, 2), "AUD": (36, 2), "ZAR": (710, 2), "NGN": (566, 2), "KES": (404, 2),
    "BHD": (48, 3), "KWD": (414, 3), "TND": (788, 3),
}


def currency(code: str) -> tuple[int, int]:
    """(ISO 4217 numeric code, exponent) of an alphabetic currency code."""
    try:
        return CURRENCIES[code]
    except KeyError:
        raise ValueError(f"unknown currency {code!r}; known: {', '.join(sorted(CURRENCIES))}") from None


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(n: int, increment: int) -> int:
    """n rounded up to a whole number of increments (increment >= 1)."""
    return ceil_div(n, increment) * increment if n > 0 else 0
