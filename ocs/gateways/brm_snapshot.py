"""Balance snapshots of the BRM gateway (``ocs brm-gateway``, ``--snapshot``): every balance in
the LMDB cache, as of one read snapshot, into the master's ``balance_snapshots``.

Written in chunks, each in its own short master transaction, so the master
(on SQLite: its one write lock) is never held while LMDB is read; all chunks
of one snapshot share its ``taken_at``. ``master_meta`` keeps ``SNAPSHOT_AT``
(the latest complete snapshot, set with its last chunk) and
``SNAPSHOT_WRITING`` (the one being written). docs/billing.md has the rules.
"""

from __future__ import annotations

import json
import logging

from ..charging import balance as bal
from ..charging.records import decode_balance
from ..store.lmdb import LmdbStore
from .master import Master

log = logging.getLogger("ocs.brm")
SNAPSHOT_AT = "brm:snapshot_at"             # master_meta key: taken_at of the last complete snapshot
SNAPSHOT_WRITING = "brm:snapshot_writing"   # master_meta key: taken_at of one being written


def take_snapshot(store: LmdbStore, master: Master, now: int, chunk: int = 1000) -> int:
    """Every balance, as of one LMDB read snapshot, into balance_snapshots at ``taken_at = now``.
    Body: {"summary": totals by kind (ocs.charging.balance.summary), "buckets": the record's
    bucket list}. Rows are built ``chunk`` at a time and each chunk written in its own short
    master transaction (the master is never locked while LMDB is read). SNAPSHOT_AT is set
    with the last chunk: it names the latest complete snapshot. The same ``now`` again keeps
    the rows already there (ON CONFLICT DO NOTHING); an earlier snapshot left incomplete (the
    gateway killed midway, SNAPSHOT_WRITING) is deleted first."""
    _drop_incomplete(master, now, chunk)
    n = 0
    with store.read() as txn:
        rows = []
        for key, raw in txn.items("balances"):
            body = {"summary": bal.summary(decode_balance(raw), now),
                    "buckets": json.loads(bytes(raw))["buckets"]}
            rows.append((bytes(key).decode(), now, json.dumps(body, separators=(",", ":"))))
            if len(rows) >= chunk:
                n += _snapshot_chunk(master, rows, now, last=False)
                rows = []
        n += _snapshot_chunk(master, rows, now, last=True)
    log.info("balance snapshot at %d: %d balances", now, n)
    return n


def _snapshot_chunk(master: Master, rows: list, now: int, last: bool) -> int:
    with master.transaction() as cur:
        if rows:
            cur.executemany("INSERT INTO balance_snapshots (account_id, taken_at, body) VALUES "
                            "(?, ?, ?) ON CONFLICT (account_id, taken_at) DO NOTHING", rows)
        if last:
            _set_meta(cur, SNAPSHOT_AT, str(now))
            cur.execute("DELETE FROM master_meta WHERE key = ?", (SNAPSHOT_WRITING,))
    return len(rows)


def _drop_incomplete(master: Master, now: int, chunk: int) -> None:
    with master.transaction() as cur:
        meta = dict(cur.all("SELECT key, value FROM master_meta WHERE key IN (?, ?)",
                            (SNAPSHOT_AT, SNAPSHOT_WRITING)))
        _set_meta(cur, SNAPSHOT_WRITING, str(now))
    stale = meta.get(SNAPSHOT_WRITING)
    if stale is None or stale in (str(now), meta.get(SNAPSHOT_AT)):
        return
    deleted = chunk
    while deleted:                       # in short transactions too
        with master.transaction() as cur:
            deleted = cur.execute(
                "DELETE FROM balance_snapshots WHERE taken_at = ? AND account_id IN (SELECT "
                "account_id FROM balance_snapshots WHERE taken_at = ? LIMIT ?)",
                (int(stale), int(stale), chunk)).rowcount
    log.info("deleted the incomplete balance snapshot of %s", stale)


def _set_meta(cur, key: str, value: str) -> None:
    cur.execute("INSERT INTO master_meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value", (key, value))
