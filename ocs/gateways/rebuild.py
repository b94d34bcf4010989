"""Balances rebuilt from the master when a cache is loaded again (recovery).

A cache loaded for the first time gets its balances from the master's top-ups
and adjustments. A cache loaded again, after the first one was lost or had to be
replaced (another schema version, a power loss with durability "os"), must not
give back what was spent: the master also holds every rated event the BRM
gateway delivered, and each carries ``impacts`` ([bucket id, change]), the exact
change it made to each bucket (docs/records.md). For one account, in order:

1. the buckets the old cache created itself, from the events that created them
   (``top_up`` and ``initial_balance`` carry the whole bucket: kind, expiry, rating
   groups, priority; older events without it give money when their units are
   empty, else their one unit, and no expiry);
2. the master's top-ups and adjustments (``em_apply.credit``): one that conflicts
   with a bucket of step 1 is set aside, as it was in the old cache (a cache bucket
   always came first: a top-up into an existing bucket of another kind is refused);
3. the ``impacts`` of every delivered event, except the events recording a master
   adjustment (``adjustment`` set: already counted in step 2). An impact on a bucket
   that step 1 or 2 did not make is not guessed at: it is reported.

Offline usage records (``ocs rate``) get their "rated" markers back, so a usage
file fed again is not charged twice. Limits: events the old cache never delivered
are not in the master (deliver them first when the old cache can still be read:
`ocs brm-gateway --once`), and reservations of open sessions are gone.
"""

from __future__ import annotations

import json

from ..charging.model import MONEY, Balance, Bucket
from ..charging.offline import RATED, record_key

CREATING = ("top_up", "initial_balance")


def parse(delivered: list) -> list[dict]:
    """Event bodies (JSON text from the master) without the master's own adjustments."""
    events = [json.loads(raw) if isinstance(raw, (str, bytes)) else raw for raw in delivered]
    return [e for e in events if "adjustment" not in e]


def cache_buckets(balance: Balance, events: list[dict]) -> list[str]:
    """Step 1: make the buckets the old cache created. Returns problems found."""
    problems = []
    for e in events:
        if e.get("type") not in CREATING or not e.get("impacts"):
            continue
        d = e.get("bucket")
        if d is None:                               # an event written before it carried the bucket
            units = e.get("units") or {}
            d = {"id": e["impacts"][0][0], "kind": next(iter(units)) if len(units) == 1 else MONEY}
        have = balance.bucket(d["id"])
        if have is None:
            rgs = d.get("rating_groups")
            balance.buckets.append(Bucket(d["id"], d["kind"], 0, 0,
                                          d.get("priority", 1 << 30 if d["id"] == "main" else 100),
                                          d.get("expires"), tuple(rgs) if rgs is not None else None))
        elif have.kind != d["kind"]:
            problems.append(f"event {e.get('event_id')}: bucket {d['id']} holds {have.kind}, "
                            f"the event credits {d['kind']}")
    return problems


def apply_delivered(balance: Balance, events: list[dict]) -> tuple[list, list[str]]:
    """Step 3: add the impacts of the delivered events. Returns (the (meta key, value)
    markers of offline records to write with the balance, problems found)."""
    markers, problems = [], []
    for e in events:
        for bucket_id, change in e.get("impacts") or ():
            bucket = balance.bucket(bucket_id)
            if bucket is None:
                problems.append(f"event {e.get('event_id')}: bucket {bucket_id} is unknown; "
                                f"its change of {change} is not applied")
                continue
            bucket.amount += int(change)
        units = e.get("units") or {}
        if e.get("type") == "offline_usage" and e.get("record_id") and len(units) == 1:
            (unit, n), = units.items()
            digest = record_key(e["identity"], e["context"], e.get("rating_group"),
                                e.get("service_id"), e["start"], e["end"], n, unit)
            markers.append((RATED + e["record_id"].encode(), f"{e['event_id']} {digest}".encode()))
    return markers, problems
