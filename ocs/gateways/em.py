"""`ocs em-gateway`: load the master database into the LMDB cache, then follow its changes.

ECE's EM gateway and Customer Updater (brm-ece.md A.3). An empty cache gets a
bulk load of everything from one consistent snapshot of the master (plans,
accounts with their identities, balances built from every top-up and
adjustment), with the snapshot's last change number as the cursor. Then it
follows the change log from that cursor: it reads a batch of changes, reads the
changed entities' current state from the master, and applies them in one cache
transaction that also moves the cursor (ocs/gateways/em_apply.py). PostgreSQL
wakes it with LISTEN/NOTIFY; SQLite is polled every ``[em] poll_interval``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from ..metrics.publish import SnapshotWriter
from ..store.base import StoreError
from ..store.lmdb import LmdbStore
from . import em_apply as ap
from .master import CHANNEL, Master, MasterError, connect, reopen

log = logging.getLogger("ocs.em")
COMMAND = "em-gateway"


def add_parser(sub) -> None:
    e = sub.add_parser(COMMAND, help="load the master DB into the cache and follow its changes")
    e.add_argument("--config", help="TOML configuration file ([master], [em], [store])")
    e.add_argument("--store", help="LMDB folder (overrides [store] path)")
    e.add_argument("--master", help="master database URL (overrides [master] url)")
    e.add_argument("--migrate", action="store_true", help="create or upgrade the master schema and exit")
    e.add_argument("--check", action="store_true", help="compare master and cache, report differences")
    e.add_argument("--once", action="store_true", help="load or catch up, then exit (no following)")


def run(args, config) -> int:
    logging.basicConfig(level=getattr(logging, config.log.level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        master = connect(config.master.url)
        if args.migrate:
            done = master.migrate()
            print(f"master schema at version {master.schema_version()}"
                  + (f" (applied {', '.join(map(str, done))})" if done else " (up to date)"))
            return 0
        master.check_schema()
        store = LmdbStore(config.store.path, map_size=config.store.map_size,
                          durability=config.store.durability)
    except (MasterError, StoreError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"ocs: cannot open the cache {config.store.path}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        if args.check:
            from .em_check import check
            differences = check(store, master, sys.stdout)
            return 1 if differences else 0
        gateway = Gateway(store, master, config.em.batch, config.em.poll_interval)
        gateway.metrics = SnapshotWriter(store, "em-gateway", config.metrics.interval)
        gateway.start(progress=sys.stderr)
        if not args.once:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: gateway.stop.set())
            gateway.follow()
        else:
            gateway.catch_up()
        return 0
    except (MasterError, ap.SyncError, StoreError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
        master.close()


class Gateway:
    def __init__(self, store: LmdbStore, master: Master, batch: int = 500, poll_interval: float = 0.2,
                 clock=time.time):
        self.store, self.master, self.batch, self.poll = store, master, batch, poll_interval
        self.clock = clock
        self.stop = threading.Event()
        self.cursor: int | None = None
        self.applied = 0
        self.latencies: list[float] = []     # seconds from master commit to cache commit
        self._listener = None
        self.metrics: SnapshotWriter | None = None   # published while following

    # -- bulk load -------------------------------------------------------------
    def start(self, progress=None) -> None:
        """Bulk-load an empty cache (or one whose load was interrupted), else resume."""
        with self.store.read() as txn:
            self.cursor = ap.cursor(txn)
            loading = txn.get("meta", ap.LOADING) is not None
            mine = txn.get("meta", ap.MASTER_ID)
            accounts = txn.count("accounts")
        master_id = self.master.master_id()
        if mine is not None and mine.decode() != master_id:
            raise ap.SyncError(f"the cache at {self.store.path} was loaded from another master "
                               "database; use an empty --store")
        if self.cursor is not None and not loading:
            log.info("resuming after change %d", self.cursor)
            return
        if accounts and mine is None:
            raise ap.SyncError(f"the cache at {self.store.path} holds {accounts} accounts that "
                               "were not loaded from a master database; use an empty --store")
        self.bulk_load(master_id, progress)

    def bulk_load(self, master_id: str, progress=None) -> dict:
        from .bulk import load
        started = self.clock()
        counts = load(self.store, self.master, master_id, progress, now=int(started))
        self.cursor = counts["cursor"]
        counts["seconds"] = round(self.clock() - started, 2)
        if progress is not None:
            print(f"loaded {counts['accounts']} accounts, {counts['identities']} identities, "
                  f"{counts['plans']} plans, {counts['adjustments']} top-ups/adjustments"
                  + (f", {counts['events']} delivered rated events (balances rebuilt)"
                     if counts["events"] else "") + " in "
                  f"{counts['seconds']} s; following changes after {self.cursor}", file=progress)
        return counts

    # -- following ----------------------------------------------------------------
    def step(self) -> int:
        """Apply the next batch of changes; the number applied (0: none waiting)."""
        changes = self.master.changes_after(self.cursor, self.batch)
        if not changes:
            return 0
        items = []
        with self.master.transaction(snapshot=True) as cur:
            for _seq, entity, key, _at in changes:
                if entity == "plan":
                    items.append((entity, key, self.master.plan(cur, key)))
                elif entity == "account":
                    items.append((entity, key, self.master.account(cur, key)))
                elif entity == "adjustment":
                    items.append((entity, key, self.master.adjustment(cur, key)))
        expected, last = self.cursor, changes[-1][0]
        now = int(self.clock())
        self.store.write(lambda txn: ap.apply_changes(txn, items, expected, last, now))
        done = time.time_ns() // 1000
        self.latencies.extend((done - c[3]) / 1e6 for c in changes)
        del self.latencies[:-100000]
        self.cursor = last
        self.applied += len(changes)
        if self.metrics is not None:
            self.metrics.tally.inc("ocs_em_gateway_changes_applied_total", (), len(changes))
            self.metrics.gauges = {("ocs_em_gateway_cursor", ()): last,
                                   ("ocs_em_gateway_lag_seconds", ()):
                                       max(0.0, done / 1e6 - changes[-1][3] / 1e6)}
        log.debug("applied changes %d..%d", changes[0][0], last)
        return len(changes)

    def catch_up(self) -> int:
        total = 0
        while n := self.step():
            total += n
        return total

    def follow(self) -> None:
        """Apply changes as they come until ``stop`` is set."""
        log.info("following %s after change %d", self.master.url, self.cursor)
        while not self.stop.is_set():
            if self._listener is None:
                self._listen()              # before reading: a change after the read wakes us
            self._publish()
            try:
                if self.step():
                    continue
            except MasterError as e:
                log.warning("master: %s; reconnecting", e)
                self._reconnect()
                continue
            if self.metrics is not None:    # caught up: no lag
                self.metrics.gauges = {("ocs_em_gateway_cursor", ()): self.cursor,
                                       ("ocs_em_gateway_lag_seconds", ()): 0.0}
                self._publish()
            self._wait()
        self._unlisten()
        if self.metrics is not None:
            self.metrics.final()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.maybe()

    def _reconnect(self) -> None:
        self.stop.wait(min(self.poll * 5, 1.0))
        self.master = reopen(self.master, log)
        self._unlisten()

    def _listen(self) -> None:
        if self.master.dialect != "postgresql":
            return
        import psycopg
        try:
            self._listener = psycopg.connect(self.master.url, autocommit=True)
            self._listener.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as e:
            log.warning("LISTEN %s: %s; polling until it works", CHANNEL, str(e).strip())
            self._unlisten()

    def _unlisten(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:               # noqa: BLE001 - closing a broken connection
                pass
            self._listener = None

    def _wait(self) -> None:
        if self._listener is None:
            self.stop.wait(self.poll)
            return
        import psycopg
        try:
            # one notification is enough to wake; the timeout is a safety net
            for _ in self._listener.notifies(timeout=self.poll * 5, stop_after=1):
                pass
        except psycopg.Error as e:
            log.warning("LISTEN connection lost (%s); reconnecting", str(e).strip())
            self._unlisten()
            self.stop.wait(self.poll)
