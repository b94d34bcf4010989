"""Balances rebuilt from the master when a cache is loaded again (recovery).

A cache loaded for the first time gets its balances from the master's top-ups
and adjustments. A cache loaded again, after the first one was lost or had to be
replaced (another schema version, a power loss with durability "os"), must not
give back what was spent: the master also holds every rated event the BRM
gateway delivered, and each carries ``impacts`` ([bucket id, change]), the exact
change it made to each bucket (docs/records.md). The rebuilt balance is

    top-ups and adjustments + impacts of every delivered event

except the events that record a master adjustment being applied (they carry
``adjustment``; the adjustment itself is already counted). Offline usage records
(``ocs rate``) get their "rated" markers back, so a usage file fed again is not
charged twice. Known limits: events the old cache had not delivered are not in
the master and so not in the balance (deliver them first when the old cache can
still be read: `ocs brm-gateway --once`), and a bucket the old cache created
itself (`ocs accounts top-up --kind`) comes back without its expiry.
"""

from __future__ import annotations

import json

from ..charging.model import MONEY, Balance, Bucket
from ..charging.offline import RATED, record_key


def apply_delivered(balance: Balance, events: list) -> list[tuple[bytes, bytes]]:
    """Add the impacts of delivered events (JSON bodies) to ``balance``; returns the
    (meta key, value) markers of offline records to write with it."""
    markers = []
    for raw in events:
        e = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        if "adjustment" in e:
            continue
        units = e.get("units") or {}
        for bucket_id, change in e.get("impacts") or ():
            bucket = balance.bucket(bucket_id)
            if bucket is None:
                kind = MONEY if bucket_id == "main" or len(units) != 1 else next(iter(units))
                bucket = Bucket(bucket_id, kind, 0, 0, 1 << 30 if bucket_id == "main" else 100)
                balance.buckets.append(bucket)
            bucket.amount += int(change)
        if e.get("type") == "offline_usage" and e.get("record_id") and len(units) == 1:
            (unit, n), = units.items()
            digest = record_key(e["identity"], e["context"], e.get("rating_group"),
                                e.get("service_id"), e["start"], e["end"], n, unit)
            markers.append((RATED + e["record_id"].encode(), f"{e['event_id']} {digest}".encode()))
    return markers
