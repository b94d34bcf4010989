"""Balances rebuilt from the master when a cache is loaded again (recovery).

A cache loaded for the first time gets its balances from the master's top-ups
and adjustments. A cache loaded again, after the first one was lost or had to be
replaced (another schema version, a power loss with durability "os"), must not
give back what was spent: the master also holds every rated event the BRM
gateway delivered, and each carries ``impacts`` ([bucket id, change]), the exact
change it made to each bucket (docs/records.md).

The rebuild replays one account's history in the order it happened: the
delivered events by the time they were recorded (then by outbox sequence), and
the master's top-ups that have no delivered event (applied by the first bulk
load, refused by the old cache, or made while no gateway ran) at the time they
were made; the two hosts' clocks must agree (NTP). Before each step, buckets expired
by then are dropped, as the old cache dropped them, so a bucket id used again
after its bucket expired names the new bucket, not the old one:
- an event recording a master adjustment (``adjustment``) makes its bucket from
  the master's row (kind, expiry, rating groups) and applies its impacts;
- ``top_up``/``initial_balance`` events made by the cache carry the bucket they
  made (``bucket``: kind, expiry, rating groups, priority); older ones without it
  give money when their units are empty, else their one unit, and no expiry;
- a master top-up without an event is credited as the EM gateway credits one;
  one that conflicts with a bucket of another kind is set aside, as it was in the
  old cache;
- every other event applies its impacts; an impact on a bucket dropped as expired
  brings it back (the old cache still held it for a reservation); one on a bucket
  nothing made is not guessed at: it is reported.

Offline usage records (``ocs rate``) get their "rated" markers back, so a usage
file fed again is not charged twice. Limits: events the old cache never delivered
are not in the master (deliver them first when the old cache can still be read:
`ocs brm-gateway --once`), and reservations of open sessions are gone.
"""

from __future__ import annotations

import json

from ..charging import balance as bal
from ..charging.model import MONEY, Balance, Bucket
from ..charging.offline import RATED, record_key

CREATING = ("top_up", "initial_balance")


def _order(e: dict) -> tuple:
    store, _, seq = str(e.get("event_id", "")).rpartition("-")
    return (int(e.get("recorded") or e.get("end") or 0), store, int(seq) if seq.isdigit() else 0)


class Replay:
    def __init__(self, account_id: str, credit):
        self.balance = Balance(account_id, [])
        self.credit = credit                   # em_apply.credit(balance, adjustment row)
        self.dropped: dict[str, Bucket] = {}
        self.applied: list[str] = []           # master adjustments counted
        self.failed: list[tuple[str, str]] = []  # (adjustment id, why)
        self.markers: list[tuple[bytes, bytes]] = []
        self.problems: list[str] = []
        self.from_bare: dict[str, list[str]] = {}  # bucket id -> bare adjustments that made/fed it

    def run(self, adjustments: list, delivered: list, now: int) -> "Replay":
        events = [json.loads(raw) if isinstance(raw, (str, bytes)) else raw for raw in delivered]
        rows = {a[0]: a for a in adjustments}
        with_event = {e["adjustment"] for e in events if "adjustment" in e}
        steps = [(_order(e), 1, e) for e in events]
        # a top-up with no delivered event: applied by the first bulk load, refused, or made
        # while no gateway ran; each at the time it was made (before events of that second)
        steps += [((min(int(a[8]), now), "", n), 0, a)
                  for n, a in enumerate(a for a in adjustments if a[0] not in with_event)]
        for when, kind, item in sorted(steps, key=lambda s: (s[0], s[1])):
            self.drop_expired(min(when[0], now))     # nothing happened after now
            if kind == 0:
                self.bare_adjustment(item)
            else:
                self.event(item, rows)
        self.drop_expired(now)
        bal.main_bucket(self.balance)
        return self

    def drop_expired(self, at: int) -> None:
        keep = []
        for b in self.balance.buckets:
            if b.live(at):
                keep.append(b)
            else:
                self.dropped[b.id] = b
        self.balance.buckets = keep

    def make(self, d: dict) -> Bucket | None:
        have = self.balance.bucket(d["id"])
        if have is None:
            rgs = d.get("rating_groups")
            have = Bucket(d["id"], d["kind"], 0, 0, d.get("priority", 1 << 30 if d["id"] == "main"
                                                           else 100),
                          d.get("expires"), tuple(rgs) if rgs is not None else None)
            self.balance.buckets.append(have)
            self.dropped.pop(d["id"], None)
        elif have.kind != d["kind"] and d["id"] in self.from_bare:
            # the cache made this bucket with its own kind, so it did not exist with another
            # then: those top-ups came after it and the old cache refused them as well
            for adj_id in self.from_bare.pop(d["id"]):
                self.applied.remove(adj_id)
                self.failed.append((adj_id, f"adjustment {adj_id}: bucket {d['id']} holds "
                                            f"{d['kind']} in the cache, not {have.kind}"))
            self.balance.buckets.remove(have)
            return self.make(d)
        elif have.kind != d["kind"]:
            return None
        return have

    def bare_adjustment(self, row: tuple) -> None:
        try:
            bucket = self.credit(self.balance, row[:8])
            self.applied.append(row[0])
            if bucket.id != "main":
                self.from_bare.setdefault(bucket.id, []).append(row[0])
        except Exception as e:                 # noqa: BLE001 - any refusal: set aside, go on
            self.failed.append((row[0], str(e)))

    def event(self, e: dict, rows: dict) -> None:
        units = e.get("units") or {}
        if "adjustment" in e:
            row = rows.get(e["adjustment"])
            if row is None:
                self.problems.append(f"event {e.get('event_id')}: adjustment {e['adjustment']} "
                                     "is not in the master")
                return
            _, _, _, kind, _, bucket_id, expires, rgs = row[:8]
            if not (kind == MONEY and bucket_id is None and expires is None):
                self.make({"id": bucket_id or f"adj-{row[0]}", "kind": kind, "expires": expires,
                           "rating_groups": json.loads(rgs) if rgs else None})
            self.applied.append(row[0])
        elif e.get("type") in CREATING and e.get("impacts"):
            d = e.get("bucket") or {"id": e["impacts"][0][0],
                                    "kind": next(iter(units)) if len(units) == 1 else MONEY}
            if self.make(d) is None:
                self.problems.append(f"event {e.get('event_id')}: bucket {d['id']} holds "
                                     f"{self.balance.bucket(d['id']).kind}, not {d['kind']}")
        for bucket_id, change in e.get("impacts") or ():
            bucket = self.balance.bucket(bucket_id)
            if bucket is None and bucket_id in self.dropped:
                bucket = self.dropped.pop(bucket_id)       # kept by the old cache for a reservation
                self.balance.buckets.append(bucket)
            if bucket is None and bucket_id == "main":
                bucket = bal.main_bucket(self.balance)
            if bucket is None:
                self.problems.append(f"event {e.get('event_id')}: bucket {bucket_id} is unknown; "
                                     f"its change of {change} is not applied")
                continue
            bucket.amount += int(change)
        if e.get("type") == "offline_usage" and e.get("record_id") and len(units) == 1:
            (unit, n), = units.items()
            digest = record_key(e["identity"], e["context"], e.get("rating_group"),
                                e.get("service_id"), e["start"], e["end"], n, unit)
            self.markers.append((RATED + e["record_id"].encode(), f"{e['event_id']} {digest}".encode()))
