"""EM gateway benchmark: bulk-load rate and change-to-cache latency, SQLite and PostgreSQL.

    python3 tools/bench_em.py --accounts 1000000 --pg postgresql://postgres@127.0.0.1/postgres
    python3 tools/bench_em.py --accounts 0 --changes 500 --rate 20     # latency only

Bulk: a fresh master gets N accounts (one plan, two identities and one top-up
each, written with plain SQL in one transaction: the set-up is not measured),
then `Gateway.start()` loads them into an empty LMDB cache (durability os) and
the wall time is reported, against a baseline in the same run: only reading the
three sorted streams from the master. Latency: a follower runs in a thread; the bench
commits status changes and top-ups to the master at a pace and, from another
thread, times each from the return of the master commit to the moment a cache
read shows it (checked every 0.5 ms). Medians of the runs are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ocs.charging import balance as bal                       # noqa: E402
from ocs.charging.records import decode_account, decode_balance  # noqa: E402
from ocs.gateways.em import Gateway                          # noqa: E402
from ocs.gateways.master import connect                      # noqa: E402
from ocs.store.lmdb import LmdbStore                          # noqa: E402

PLAN = {"id": "bench", "currency": "EUR", "tariffs": [
    {"context": "32251@3gpp.org", "unit": "total_octets", "price": 1, "per": 1048576}]}


def new_master(kind: str, pg: str | None, tmp: str):
    if kind == "sqlite":
        return f"sqlite:{tmp}/master-{uuid.uuid4().hex[:6]}.db", None
    import psycopg
    name = "ocs_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return pg.rsplit("/", 1)[0] + "/" + name, name


def drop(pg: str, name: str | None) -> None:
    if name:
        import psycopg
        with psycopg.connect(pg, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def populate(m, n: int) -> None:
    m.put_plan(PLAN)
    now = int(time.time())
    chunk = 50000
    with m.transaction() as cur:
        for start in range(0, n, chunk):
            ids = range(start, min(n, start + chunk))
            cur.executemany("INSERT INTO accounts (id, customer_id, plan_id, currency, status, "
                            "credit_limit, name, updated_at) VALUES (?, NULL, 'bench', 'EUR', "
                            "'active', 0, '', ?)", [(f"acct-{i:07d}", now) for i in ids])
            cur.executemany("INSERT INTO identities (identity, account_id) VALUES (?, ?)",
                            [(f"e164:4670{i:07d}", f"acct-{i:07d}") for i in ids]
                            + [(f"imsi:24001{i:010d}", f"acct-{i:07d}") for i in ids])
            cur.executemany("INSERT INTO adjustments (id, account_id, reason, kind, amount, bucket,"
                            " expires, rating_groups, created_at) VALUES (?, ?, 'top_up', 'money', "
                            "100000, NULL, NULL, NULL, ?)", [(f"t-{i}", f"acct-{i:07d}", now)
                                                             for i in ids])


def bulk(kind: str, n: int, pg: str | None, tmp: str) -> float:
    url, name = new_master(kind, pg, tmp)
    m = connect(url)
    try:
        m.migrate()
        populate(m, n)
        started = time.perf_counter()          # baseline: reading the master alone
        with m.transaction(snapshot=True) as cur:
            for sql in ("SELECT * FROM accounts ORDER BY " + m.ordered("id"),
                        "SELECT * FROM identities ORDER BY " + m.ordered("account_id"),
                        "SELECT * FROM adjustments ORDER BY " + m.ordered("account_id")):
                for _ in m.stream(cur, sql):
                    pass
        baseline = time.perf_counter() - started
        path = tempfile.mkdtemp(dir=tmp)
        store = LmdbStore(path, map_size=8 << 30, durability="os")
        try:
            started = time.perf_counter()
            Gateway(store, m).start(progress=sys.stderr)
            took = time.perf_counter() - started
            with store.read() as txn:
                assert txn.count("accounts") == n
        finally:
            store.close()
            shutil.rmtree(path)
        return took, baseline
    finally:
        m.close()
        drop(pg, name)


def latency(kind: str, changes: int, rate: float, pg: str | None, tmp: str) -> list[float]:
    url, name = new_master(kind, pg, tmp)
    m = connect(url)
    path = tempfile.mkdtemp(dir=tmp)
    store = LmdbStore(path, map_size=1 << 28, durability="fsync")
    try:
        m.migrate()
        populate(m, 1000)
        gw = Gateway(store, m, poll_interval=0.2)
        gw.start()
        follower = threading.Thread(target=gw.follow)
        follower.start()
        writer = connect(url)
        out = []
        for i in range(changes):
            aid = f"acct-{i % 1000:07d}"
            if i % 2:
                writer.add_adjustment(f"lat-{i}", aid, 7)
                with store.read() as txn:
                    before = bal.summary(decode_balance(txn.get("balances", aid.encode())), 0)
                target = before.get("money", 0) + 7
                seen = lambda txn, a=aid, t=target: bal.summary(  # noqa: E731
                    decode_balance(txn.get("balances", a.encode())), 0).get("money") == t
                committed = time.perf_counter()
            else:
                status = "suspended" if i % 4 == 0 else "active"
                writer.set_status(aid, status)
                committed = time.perf_counter()
                seen = lambda txn, a=aid, s=status: decode_account(  # noqa: E731
                    txn.get("accounts", a.encode())).status == s
            while True:
                with store.read() as txn:
                    if seen(txn):
                        break
                time.sleep(0.0005)
            out.append(time.perf_counter() - committed)
            time.sleep(max(0.0, 1 / rate - out[-1]))
        gw.stop.set()
        follower.join()
        writer.close()
        return out
    finally:
        store.close()
        shutil.rmtree(path)
        m.close()
        drop(pg, name)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--changes", type=int, default=400)
    ap.add_argument("--rate", type=float, default=20.0, help="changes per second")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--kinds", default="sqlite,postgresql")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ocs-bench-em-")
    try:
        for kind in args.kinds.split(","):
            if args.accounts:
                runs = [bulk(kind, args.accounts, args.pg, tmp) for _ in range(args.runs)]
                med = statistics.median(r[0] for r in runs)
                base = statistics.median(r[1] for r in runs)
                print(f"{kind:10} bulk load {args.accounts:,} accounts: median {med:.1f} s "
                      f"({args.accounts / med:,.0f} accounts/s) runs {[round(r[0], 1) for r in runs]}; "
                      f"baseline (reading the master alone) {base:.1f} s, load/baseline {med / base:.1f}")
            if args.changes:
                xs = latency(kind, args.changes, args.rate, args.pg, tmp)
                print(f"{kind:10} change-to-cache latency over {len(xs)} changes at {args.rate:g}/s:"
                      f" p50 {pct(xs, .5) * 1000:.1f} ms  p99 {pct(xs, .99) * 1000:.1f} ms  "
                      f"max {max(xs) * 1000:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
