"""`ocs brm-gateway`: deliver the LMDB outbox's rated events to the master, exactly once.

ECE's rated-event path to BRM (../shared/reference/brm-ece.md A.5: RE
Formatter + RE Loader) in one loop. Each batch:
1. read the oldest ``batch`` outbox entries (8-byte big-endian sequence keys,
   commit order) in one LMDB read snapshot;
2. insert them, in that order, into ``rated_events`` with ``INSERT ... ON
   CONFLICT (event_id) DO NOTHING``; if the clause dropped any, compare each
   dropped event with the stored one of its id: a different event under a
   delivered id (the outbox sequence went back, e.g. LMDB restored from a
   backup) rolls the batch back and stops the gateway (DeliveryError); then
   commit the master transaction;
3. only then delete exactly those keys from the outbox in one LMDB write.
A crash before 2 commits changes nothing; a crash between 2 and 3 leaves the
batch in the outbox, and the next run inserts none of it again (the event id
is the idempotency key). So every event reaches the master exactly once, in
outbox order, and leaves the outbox only after it is there. One gateway per
LMDB environment: a second one would still be exactly-once, but the two would
interleave batches.

Beside delivery: a balance snapshot every ``[brm] snapshot_interval`` seconds
(every balance, one LMDB read snapshot, short master transactions), and with
``[brm] auto_bill`` the bill run of a month that has ended once none of its
events is left in the outbox (in order: a cycle that cannot be billed holds the later
ones back; it is logged and retried with a back-off, and delivery goes on). SIGTERM/SIGINT
stop the loop between batches.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time

from ..charging.records import RecordError, decode_event
from ..metrics.publish import SnapshotWriter
from ..store.base import StoreError
from ..store.lmdb import LmdbStore
from . import billing
from .brm_snapshot import SNAPSHOT_AT, take_snapshot
from .master import Master, MasterError, connect, reopen

log = logging.getLogger("ocs.brm")
COMMAND = "brm-gateway"
INSERT = ("INSERT INTO rated_events (event_id, account_id, type, context, rating_group, service_id, "
          "start_at, end_at, amount, unpaid, currency, body, loaded_at) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING")
BILL_CHECK_EVERY = 60.0                # seconds between auto-bill checks
BILL_BACKOFF_MAX = 3600.0              # the longest wait after failed checks (doubling from 60 s)


class DeliveryError(Exception):
    """An outbox entry that cannot be delivered (the gateway stops rather than skip it)."""


def event_row(key: bytes, raw: bytes, loaded_at: int) -> tuple:
    """The rated_events row of one outbox entry; ``body`` is the stored JSON, byte for byte."""
    try:
        e = decode_event(raw)
        return (e["event_id"], e["account"], e["type"], e.get("context"), e.get("rating_group"),
                e.get("service_id"), int(e["start"]), int(e["end"]), int(e["amount"]),
                int(e.get("unpaid") or 0), e["currency"], bytes(raw).decode("utf-8"), loaded_at)
    except (RecordError, KeyError, TypeError, ValueError) as err:
        raise DeliveryError(f"outbox entry {int.from_bytes(key, 'big')}: {err!r}; not delivered, "
                            "the gateway stops rather than skip it") from None


def deliver(store: LmdbStore, master: Master, batch: int, upto: bytes | None = None,
            now: int | None = None) -> tuple[int, int]:
    """Deliver the oldest ``batch`` outbox events (keys below ``upto``, if given).
    Returns (delivered: newly in the master, duplicates: already there)."""
    with store.read() as txn:
        items = [(bytes(k), bytes(v)) for k, v in txn.items("outbox", b"", upto, batch)]
    if not items:
        return 0, 0
    loaded_at = int(time.time()) if now is None else now
    rows = [event_row(k, v, loaded_at) for k, v in items]
    with master.transaction() as cur:
        inserted = cur.executemany(INSERT, rows)
        if inserted < len(rows):
            _check_present(cur, items, rows)
    keys = [k for k, _ in items]

    def delete(txn):
        for k in keys:
            txn.delete("outbox", k)
    store.write(delete)
    log.info("batch outbox %d..%d: %d delivered, %d already present", int.from_bytes(keys[0], "big"),
             int.from_bytes(keys[-1], "big"), inserted, len(rows) - inserted)
    return inserted, len(rows) - inserted


def _check_present(cur, items: list, rows: list) -> None:
    """Every event the conflict clause dropped must be the event stored under its id (the same
    JSON); else DeliveryError, which rolls the batch back and leaves it in the outbox."""
    ids = list(dict.fromkeys(r[0] for r in rows))
    stored = {}
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        stored.update((r[0], r[1]) for r in cur.all(
            f"SELECT event_id, body FROM rated_events WHERE event_id IN ({', '.join('?' * len(part))})",
            tuple(part)))
    for (key, _), row in zip(items, rows):
        body = stored.get(row[0])
        if body != row[11] and (body is None or json.loads(body) != json.loads(row[11])):
            raise DeliveryError(
                f"outbox entry {int.from_bytes(key, 'big')}: event {row[0]} is already in the master "
                "with a different body (did the outbox sequence go back, e.g. LMDB restored from a "
                "backup?); not delivered, the gateway stops: an operator must look")


def drain(store: LmdbStore, master: Master, batch: int, stop: threading.Event | None = None) -> tuple:
    """Deliver everything in the outbox when called (not what arrives meanwhile)."""
    with store.read() as txn:
        last = next((bytes(k) for k, _ in txn.items("outbox", reverse=True, limit=1)), None)
    done = dup = 0
    if last is None:
        return done, dup
    upto = (int.from_bytes(last, "big") + 1).to_bytes(8, "big")
    while stop is None or not stop.is_set():
        d, p = deliver(store, master, batch, upto)
        if d + p == 0:
            break
        done, dup = done + d, dup + p
    return done, dup


def outbox_events_in(store: LmdbStore, start: int, end: int) -> int:
    """Rated events still in the LMDB outbox (not delivered) that ended in [start, end)."""
    with store.read() as txn:
        return sum(1 for _, raw in txn.items("outbox") if start <= decode_event(raw)["end"] < end)


def due_cycles(store: LmdbStore, master: Master, now: int) -> list[str]:
    """Cycles to bill now: those whose bill run is unfinished (its files not in place), then
    ended ones, oldest first: each month after the last billed one up to last month (when
    nothing was billed yet: last month, if the master holds any event that ended by its
    end), without a bill run, whose events are all delivered (none left in the outbox)."""
    last_month = billing.cycle_of(billing.cycle_bounds(billing.cycle_of(now))[0] - 1)
    with master.transaction(snapshot=True) as cur:
        billed = {r[0]: r[1] for r in cur.all("SELECT cycle, finished_at FROM bill_runs")}
        first = cur.one("SELECT min(end_at) FROM rated_events")[0]
    if not billed and (first is None or first >= billing.cycle_bounds(last_month)[1]):
        return []
    cycle = billing.cycle_of(billing.cycle_bounds(max(billed))[1]) if billed else last_month
    due = sorted(c for c, finished in billed.items() if finished is None)   # interrupted runs
    while cycle <= last_month:
        start, end = billing.cycle_bounds(cycle)
        if cycle not in billed:
            if outbox_events_in(store, start, end):
                break                                   # bill in order: wait for this one
            due.append(cycle)
        cycle = billing.cycle_of(end)
    return due


class Gateway:
    def __init__(self, store: LmdbStore, master: Master, batch: int = 1000, poll_interval: float = 0.5,
                 snapshot_interval: float = 0.0, auto_bill: bool = False,
                 invoice_dir: str = "var/invoices", clock=time.time):
        self.store, self.master, self.batch, self.poll = store, master, batch, poll_interval
        self.snapshot_interval, self.auto_bill = snapshot_interval, auto_bill
        self.invoice_dir, self.clock = invoice_dir, clock
        self.stop = threading.Event()
        self.delivered = self.duplicates = 0
        self.billing: tuple | None = None      # (cycle being billed, the due ones after it)
        self.bill_failures, self.bill_error = 0, None
        self.metrics: SnapshotWriter | None = None   # published while serving

    def step(self) -> int:
        d, p = deliver(self.store, self.master, self.batch)
        self.delivered, self.duplicates = self.delivered + d, self.duplicates + p
        if self.metrics is not None and d:
            self.metrics.tally.inc("ocs_brm_gateway_events_delivered_total", (), d)
        return d + p

    def next_snapshot(self) -> float | None:
        if self.snapshot_interval <= 0:
            return None
        with self.master.transaction(snapshot=True) as cur:
            row = cur.one("SELECT value FROM master_meta WHERE key = ?", (SNAPSHOT_AT,))
        return (int(row[0]) if row else 0) + self.snapshot_interval

    def bill_due(self, now: int) -> list[str]:
        done, self.billing = [], None
        due = due_cycles(self.store, self.master, now)
        for i, cycle in enumerate(due):
            self.billing = (cycle, due[i + 1:])
            out = billing.bill(self.master, cycle, self.invoice_dir, now=now)
            log.info("auto bill run %s: %d invoices in %s", cycle, out["invoices"], out["dir"])
            done.append(cycle)
        self.billing = None
        return done

    def bill_check(self, now: int) -> float:
        """One auto-bill check (``bill_due``); returns the seconds until the next. It never
        raises (Exception): a failure is logged, with its traceback the first time it is seen,
        and billing retried later, the wait doubling with each failure in a row (60 s ..
        BILL_BACKOFF_MAX). Delivery goes on; the cycles after a failing one wait for it."""
        try:
            self.bill_due(now)
        except Exception as e:                  # anything: billing must never stop delivery
            self.bill_failures += 1
            delay = min(BILL_CHECK_EVERY * 2 ** min(self.bill_failures - 1, 16), BILL_BACKOFF_MAX)
            cycle, later = self.billing or (None, [])
            known = isinstance(e, (MasterError, billing.BillingError, OSError))
            why = str(e) if known else f"{type(e).__name__}: {e}"
            why = why.removeprefix(f"{cycle} not billed: ")       # BillingError says it already
            first, self.bill_error = self.bill_error != (cycle, why), (cycle, why)
            log.log(logging.ERROR if first else logging.WARNING,
                    "auto bill: %s; %sdelivery goes on; retrying in %.0f s",
                    f"{cycle} not billed: {why}" if cycle else f"the check failed: {why}",
                    f"the cycles after it wait for it ({', '.join(later) or 'none due yet'}); "
                    if cycle else "", delay, exc_info=first)
            if isinstance(e, MasterError):
                self._reconnect()
            return delay
        self.bill_failures, self.bill_error = 0, None
        return BILL_CHECK_EVERY

    def serve(self) -> None:
        """Deliver, snapshot and bill until ``stop`` is set (checked between batches)."""
        snapshot_at, bill_at = self.next_snapshot(), 0.0
        log.info("delivering %s -> %s, batches of %d", self.store.path, self.master.url, self.batch)
        while not self.stop.is_set():
            if self.metrics is not None:
                self.metrics.maybe()
            try:
                n = self.step()
                now = self.clock()
                if snapshot_at is not None and now >= snapshot_at:
                    take_snapshot(self.store, self.master, int(now))
                    snapshot_at = now + self.snapshot_interval
            except (MasterError, OSError) as e:
                log.warning("%s; retrying in %.1f s", e, max(self.poll, 1.0))
                self._reconnect()
                continue
            if self.auto_bill and now >= bill_at:
                bill_at = now + self.bill_check(int(now))
            if n == 0:
                self.stop.wait(self.poll)
        if self.metrics is not None:
            self.metrics.final()
        log.info("stopped: %d delivered, %d already present", self.delivered, self.duplicates)

    def _reconnect(self) -> None:
        self.stop.wait(max(self.poll, 1.0))
        self.master = reopen(self.master, log)


def add_parser(sub) -> None:
    g = sub.add_parser(COMMAND, help="deliver rated events from the outbox to the master database")
    g.add_argument("--config", help="TOML configuration file ([master], [brm], [store])")
    g.add_argument("--store", help="LMDB folder (overrides [store] path)")
    g.add_argument("--master", help="master database URL (overrides [master] url)")
    g.add_argument("--once", action="store_true", help="deliver what is in the outbox now, then exit")
    g.add_argument("--snapshot", action="store_true", help="take one balance snapshot, then exit")


def run(args, config) -> int:
    logging.basicConfig(level=getattr(logging, config.log.level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    b = config.brm
    try:
        master = connect(config.master.url)
    except (MasterError, OSError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    store = gw = None
    try:
        master.check_schema()
        try:
            store = LmdbStore(config.store.path, map_size=config.store.map_size,
                              durability=config.store.durability)
        except OSError as e:
            raise StoreError(f"cannot open the store at {config.store.path}: {e}") from None
        gw = Gateway(store, master, b.batch, b.poll_interval, b.snapshot_interval, b.auto_bill,
                     b.invoice_dir)
        gw.metrics = SnapshotWriter(store, "brm-gateway", config.metrics.interval)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: gw.stop.set())
        if args.once or args.snapshot:
            if args.once:
                d, p = drain(store, master, b.batch, gw.stop)
                print(f"delivered {d} rated events ({p} already present)")
            if args.snapshot and not gw.stop.is_set():
                print(f"snapshot of {take_snapshot(store, master, int(time.time()))} balances")
            return 0
        gw.serve()
        return 0
    except (MasterError, StoreError, DeliveryError, billing.BillingError, OSError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()
        (gw.master if gw is not None else master).close()
