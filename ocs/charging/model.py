"""The charging domain's records: accounts, price plans, balances, sessions.

These are the in-memory shapes the engine works on; `records.py` turns them
into versioned JSON for the store and `docs/records.md` documents that format.
Invariants: amounts are ints in minor currency units or in the unit of their
bucket; a bucket's `reserved` never exceeds what its `amount` (plus the
account's credit limit for the main money bucket) can cover when it was
reserved; a session's reservations name the buckets they hold units in.
"""

from __future__ import annotations

import attrs

from .units import UnitType

ACTIVE, SUSPENDED, CLOSED = "active", "suspended", "closed"
ACCOUNT_STATUSES = (ACTIVE, SUSPENDED, CLOSED)

# Subscription-Id-Type (RFC 4006 §8.47) -> identity kind used in identity keys
IDENTITY_KINDS = {0: "e164", 1: "imsi", 2: "sip", 3: "nai", 4: "private"}
MONEY = "money"


def identity_key(kind: str, value: str) -> str:
    """`e164:46700000001`. SIP URIs and NAIs compare case-insensitively, and a
    SIP URI's scheme is dropped: END_USER_SIP_URI `sip:Alice@IMS.example.org`
    and a data file's `sip:alice@ims.example.org` are both `sip:alice@ims.example.org`."""
    if kind not in IDENTITY_KINDS.values():
        raise ValueError(f"unknown identity kind {kind!r}; expected one of "
                         f"{', '.join(IDENTITY_KINDS.values())}")
    if kind in ("sip", "nai"):
        value = value.lower()
        if kind == "sip" and value.startswith(("sip:", "sips:")):
            value = value.split(":", 1)[1]
    return f"{kind}:{value}"


@attrs.define
class Account:
    id: str
    plan_id: str
    currency: str = "EUR"
    status: str = ACTIVE
    credit_limit: int = 0
    identities: tuple = ()
    name: str = ""


@attrs.define
class Bucket:
    """A monetary bucket (`kind` "money", amount in minor units) or an allowance
    (`kind` a unit name such as "total_octets"), used in priority order (lower
    first, then earlier expiry). Allowances are always used before money."""

    id: str
    kind: str
    amount: int
    reserved: int = 0
    priority: int = 100
    expires: int | None = None
    rating_groups: tuple | None = None

    def live(self, now: int) -> bool:
        return self.expires is None or now < self.expires

    def free(self) -> int:
        return self.amount - self.reserved


@attrs.define
class Balance:
    account_id: str
    buckets: list = attrs.Factory(list)

    def bucket(self, bucket_id: str) -> Bucket | None:
        for b in self.buckets:
            if b.id == bucket_id:
                return b
        return None


@attrs.frozen
class Tier:
    from_units: int
    price: int


@attrs.frozen
class Band:
    """A time-of-day band: weekdays (0 = Monday) and [start, end) minutes of the
    day in the plan's UTC offset. The band's price replaces the tariff's. A band
    whose end is before its start wraps past midnight (22:00-06:00): its days
    are the days it starts on, and it goes on into the next morning."""

    days: tuple
    start: int
    end: int
    price: int

    def covers(self, weekday: int, minute: int) -> bool:
        if self.start <= self.end:
            return weekday in self.days and self.start <= minute < self.end
        return ((weekday in self.days and minute >= self.start)
                or ((weekday - 1) % 7 in self.days and minute < self.end))


@attrs.frozen
class FinalUnit:
    """What the client does when the last units are used (RFC 4006 §8.34)."""

    action: str = "terminate"            # terminate | redirect | restrict_access
    redirect_type: int = 2               # Redirect-Address-Type: 2 = URL
    redirect_address: str = ""
    filter_ids: tuple = ()
    restriction_rules: tuple = ()


@attrs.frozen
class Tariff:
    """How one service of a plan is rated: (context, rating group, service id)
    with None matching any. Price is `price` minor units per `per` units, each
    charge rounded up to `rounding` units and then to a whole minor unit."""

    context: str
    unit: UnitType
    price: int
    rating_group: int | None = None
    service_id: int | None = None
    per: int = 1
    rounding: int = 1
    free_units: int = 0
    tiers: tuple = ()
    bands: tuple = ()
    default_quota: int = 0
    validity_time: int | None = None
    quota_threshold: int | None = None
    quota_holding_time: int | None = None
    final_unit: FinalUnit = FinalUnit()
    restricted_validity_time: int = 300
    idle_price_per_minute: int = 0
    idle_grace: int = 0

    def matches(self, context: str, rating_group: int | None, service_id: int | None) -> bool:
        return (self.context == context
                and (self.rating_group is None or self.rating_group == rating_group)
                and (self.service_id is None or self.service_id == service_id))


@attrs.frozen
class Plan:
    id: str
    currency: str = "EUR"
    utc_offset_minutes: int = 0
    tariffs: tuple = ()
    name: str = ""
    # lookups memoised per plan object (plans are immutable and decoded once per content)
    _contexts: frozenset = attrs.field(init=False, eq=False, repr=False)
    _found: dict = attrs.field(init=False, eq=False, repr=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_contexts", frozenset(t.context for t in self.tariffs))

    def contexts(self) -> frozenset:
        return self._contexts

    def tariff(self, context: str, rating_group: int | None, service_id: int | None) -> Tariff | None:
        """The first tariff that matches: list specific ones before catch-alls."""
        key = (context, rating_group, service_id)
        found = self._found.get(key, False)
        if found is not False:
            return found
        found = None
        for t in self.tariffs:
            if t.matches(context, rating_group, service_id):
                found = t
                break
        if len(self._found) < 4096:
            self._found[key] = found
        return found


@attrs.define
class ServiceState:
    """One quota of a session (one MSCC key): its reservation and totals."""

    rating_group: int | None
    service_id: int | None
    unit: UnitType
    granted: int = 0
    impacts: list = attrs.Factory(list)     # [[bucket id, amount reserved], ...]
    final: bool = False
    used: int = 0                           # units reported over the session
    charged: int = 0                        # minor units debited over the session
    energy_at: int | None = None            # last report with units > 0 (EV)
    stopped_at: int | None = None           # when units stopped flowing (EV idle)
    idle_minutes: int = 0                   # idle minutes already charged
    expires: int | None = None              # this quota's Tcc: grant time + factor x Validity-Time

    @property
    def key(self) -> str:
        return service_key(self.rating_group, self.service_id)


def service_key(rating_group: int | None, service_id: int | None) -> str:
    return f"{'' if rating_group is None else rating_group}/{'' if service_id is None else service_id}"


@attrs.define
class Session:
    id: str
    account_id: str
    identity: str
    context: str
    number: int
    opened_at: int
    updated_at: int
    expires_at: int
    services: dict = attrs.Factory(dict)    # service key -> ServiceState
    recent: list = attrs.Factory(list)      # numbers processed in (number - WINDOW, number]
    # where RAR/ASR go, from the latest CCR: `peer` is the Origin-Host (from its CER) of
    # the connection it came on, the one to send on (a relay agent's, through a DRA);
    # origin_host/origin_realm are the CCR's own, the client the request is addressed to
    peer: str = ""
    origin_host: str = ""
    origin_realm: str = ""

    WINDOW = 32

    def processed(self, number: int) -> None:
        """Record a processed request; `number` becomes the highest seen."""
        self.number = max(self.number, number)
        floor = self.number - self.WINDOW
        self.recent = sorted(n for n in {*self.recent, number} if n > floor)

    def seen(self, number: int) -> bool:
        """Processed before, or too old to tell (below the window): not to be charged again."""
        return number <= self.number - self.WINDOW or number in self.recent
