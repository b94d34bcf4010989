"""Bulk load: everything in the master, from one consistent snapshot, into the cache.

A cache loaded again (recovery) also takes the rated events the master holds into
account, so spent money stays spent (rebuild.py).

Accounts, identities and adjustments are read as three streams ordered by
account id and merged, so memory stays flat whatever the size; accounts are
written in batches of ``BATCH``, one cache transaction each. The cursor is
the snapshot's last change number and is written last: a load that is
interrupted is simply run again (em_apply.load_batch makes that safe).
"""

from __future__ import annotations

import time

from . import em_apply as ap
from .master import Master

BATCH = 5000


class Progress:
    """A one-line progress bar on a terminal, a line every 10 % otherwise."""

    def __init__(self, out, total: int, what: str):
        self.out, self.total, self.what = out, max(total, 1), what
        self.tty = bool(out is not None and hasattr(out, "isatty") and out.isatty())
        self.started, self.shown = time.monotonic(), -1

    def update(self, done: int) -> None:
        if self.out is None:
            return
        pct = done * 100 // self.total
        step = pct if self.tty else pct // 10 * 10
        if step == self.shown and done != self.total:
            return
        self.shown = step
        rate = done / max(time.monotonic() - self.started, 1e-6)
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        text = f"{self.what} [{bar}] {pct:3d}% {done}/{self.total} ({rate:,.0f}/s)"
        print(("\r" + text) if self.tty else text, end="" if self.tty else "\n", file=self.out,
              flush=True)
        if self.tty and done >= self.total:
            print(file=self.out)


def load(store, master: Master, master_id: str, progress=None, now: int | None = None) -> dict:
    now = int(time.time()) if now is None else now
    counts = {"plans": 0, "accounts": 0, "identities": 0, "adjustments": 0, "events": 0}
    with master.transaction(snapshot=True) as cur:
        last = master.last_change(cur)
        total = cur.one("SELECT count(*) FROM accounts")[0]
        plans = [master.plan(cur, r[0]) for r in cur.all("SELECT id FROM plans ORDER BY id")]

        def write_plans(txn):
            for body in plans:
                ap.apply_plan(txn, body)
        store.write(write_plans)
        counts["plans"] = len(plans)
        bar = Progress(progress, total, "accounts")
        by = master.ordered
        accounts = master.stream(cur, f"SELECT {Master.ACCOUNT_COLUMNS} FROM accounts "
                                      f"ORDER BY {by('id')}")
        idents = ByAccount(master.stream(
            cur, f"SELECT account_id, identity FROM identities ORDER BY {by('account_id')}"))
        adjs = ByAccount(master.stream(
            cur, f"SELECT account_id, {Master.ADJUSTMENT_COLUMNS}, created_at FROM adjustments "
                 f"ORDER BY {by('account_id')}, created_at, id"))
        # a cache loaded again: the master's delivered events count too (rebuild.py)
        delivered = cur.one("SELECT count(*) FROM rated_events")[0]
        events = ByAccount(master.stream(
            cur, f"SELECT account_id, body FROM rated_events ORDER BY {by('account_id')}")
            if delivered else iter(()))
        batch: list = []
        for row in accounts:
            aid = row[0]
            mine_i = [r[1] for r in idents.take(aid)]
            mine_a = [tuple(r[1:]) for r in adjs.take(aid)]
            mine_e = [r[1] for r in events.take(aid)]
            batch.append((ap.account_from_row(tuple(row), mine_i), mine_a, mine_e))
            counts["identities"] += len(mine_i)
            counts["adjustments"] += len(mine_a)
            counts["events"] += len(mine_e)
            if len(batch) >= BATCH:
                _write(store, batch, master_id, now)
                counts["accounts"] += len(batch)
                bar.update(counts["accounts"])
                batch = []
        if batch or not counts["accounts"]:
            _write(store, batch, master_id, now)
            counts["accounts"] += len(batch)
            bar.update(counts["accounts"])
    store.write(lambda txn: ap.finish_load(txn, last))
    counts["cursor"] = last
    return counts


def _write(store, batch: list, master_id: str, now: int) -> None:
    store.write(lambda txn: ap.load_batch(txn, batch, master_id, now))


class ByAccount:
    """Rows sorted by their first column (the account id), handed out a key at a time
    as the accounts stream passes: a merge join that holds one account's rows."""

    def __init__(self, rows):
        self.rows = iter(rows)
        self.head = next(self.rows, None)

    def take(self, key: str) -> list:
        """The rows of `key`, skipping those of smaller keys (accounts that are gone)."""
        out = []
        while self.head is not None and self.head[0] <= key:
            if self.head[0] == key:
                out.append(self.head)
            self.head = next(self.rows, None)
        return out
