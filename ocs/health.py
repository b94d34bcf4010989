"""`ocs check`: is a node serving this LMDB store? For a container HEALTHCHECK.

Reads the heartbeats the serving processes write (ocs/net/heartbeat.py) and
exits 0 when one is younger than `--max-age` seconds, else 1 with one line
saying what it found. It opens the store read-only and writes nothing.
"""

from __future__ import annotations

import os
import sys
import time

from .net.heartbeat import beats
from .store.base import StoreError


def add_parser(sub) -> None:
    c = sub.add_parser("check", help="exit 0 if a node serving the store wrote its heartbeat lately "
                                     "(container HEALTHCHECK), else 1")
    c.add_argument("--config", help="TOML configuration file (its [store] is used)")
    c.add_argument("--store", help="LMDB folder (overrides [store] path)")
    c.add_argument("--max-age", type=float, default=5.0,
                   help="seconds a heartbeat stays fresh (default 5: the node beats every second)")


def run(args, config, clock=time.time) -> int:
    path = config.store.path
    if not os.path.isdir(path):
        print(f"ocs: no store at {path}: no node has served it", file=sys.stderr)
        return 1
    from .store.lmdb import LmdbStore
    try:
        store = LmdbStore(path, map_size=config.store.map_size, readonly=True)
    except StoreError as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 1
    try:
        with store.read() as txn:
            found = beats(txn)
    finally:
        store.close()
    now = clock()
    fresh = [b for b in found if now - b.get("at", 0) <= args.max_age]
    if fresh:
        b = fresh[0]
        print(f"ok: {len(fresh)} serving process(es); pid {b.get('pid')} on {b.get('listen')} "
              f"({b.get('origin_host')}), heartbeat {max(0.0, now - b['at']):.1f} s ago")
        return 0
    if found:
        b = found[0]
        print(f"ocs: no heartbeat in the last {args.max_age:g} s (the newest: pid {b.get('pid')}, "
              f"{now - b.get('at', 0):.0f} s ago): the node is down or stuck", file=sys.stderr)
    else:
        print(f"ocs: no heartbeat in {path}: no node is serving it", file=sys.stderr)
    return 1
