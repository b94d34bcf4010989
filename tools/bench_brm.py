"""BRM gateway benchmark: rated events delivered per second, SQLite and PostgreSQL.

    python3 tools/bench_brm.py --events 100000 --runs 3

Each run fills a fresh LMDB outbox with N usage events (the ledger's format,
through ocs.charging.ledger.append_events) and times `drain()` into a fresh
master: read a batch, insert-if-absent in one master transaction, commit,
delete the batch from the outbox. The baseline, in the same run, is the master
alone: the same rows inserted in the same batches with no LMDB read or delete.
Medians of the runs are printed, with gateway/baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ocs.charging.ledger import append_events          # noqa: E402
from ocs.gateways.brm import INSERT, drain, event_row  # noqa: E402
from ocs.gateways.master import connect                # noqa: E402
from ocs.store.lmdb import LmdbStore                   # noqa: E402
from bench_em import drop, new_master                  # noqa: E402


def event(i: int) -> dict:
    return {"type": "usage", "account": f"acct-{i % 10000:07d}", "identity": f"e164:4670{i:07d}",
            "session": f"pgw;{i // 4};1", "request_number": i % 4, "request_type": 2,
            "context": "32251@3gpp.org", "rating_group": 10, "service_id": None,
            "start": 1_764_000_000 + i, "end": 1_764_000_060 + i, "units": {"total_octets": 5242880},
            "plan": "bench", "rate": {"price": 1, "per": 1048576, "rounding": 1024}, "amount": 5,
            "currency": "EUR", "impacts": [["main", -5]], "unpaid": 0, "balance_after": {"money": 995}}


def fill(store, n: int) -> None:
    for start in range(0, n, 5000):
        batch = [event(i) for i in range(start, min(n, start + 5000))]
        store.write(lambda txn, b=batch: append_events(txn, b, 1_764_000_100))


def one_run(kind: str, n: int, batch: int, pg: str, tmp: str) -> tuple[float, float]:
    url, name = new_master(kind, pg, tmp)
    m = connect(url)
    path = tempfile.mkdtemp(dir=tmp)
    store = LmdbStore(path, map_size=4 << 30, durability="fsync")
    try:
        m.migrate()
        fill(store, n)
        with store.read() as txn:
            rows = [event_row(bytes(k), bytes(v), 0) for k, v in txn.items("outbox")]
        with m.transaction() as cur:              # the baseline table: same columns, no data
            cur.execute("CREATE TABLE baseline AS SELECT * FROM rated_events WHERE 1 = 0")
            cur.execute("CREATE UNIQUE INDEX baseline_id ON baseline (event_id)")
        started = time.perf_counter()
        for i in range(0, n, batch):
            with m.transaction() as cur:
                cur.executemany(INSERT.replace("rated_events", "baseline"), rows[i:i + batch])
        base = time.perf_counter() - started
        started = time.perf_counter()
        done, dup = drain(store, m, batch)
        took = time.perf_counter() - started
        assert (done, dup) == (n, 0), (done, dup)
        return n / took, n / base
    finally:
        store.close()
        shutil.rmtree(path)
        m.close()
        drop(pg, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--kinds", default="sqlite,postgresql")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ocs-bench-brm-")
    try:
        for kind in args.kinds.split(","):
            runs = [one_run(kind, args.events, args.batch, args.pg, tmp) for _ in range(args.runs)]
            gw = statistics.median(r[0] for r in runs)
            base = statistics.median(r[1] for r in runs)
            print(f"{kind:10} {args.events:,} events, batches of {args.batch}: gateway {gw:,.0f} "
                  f"events/s, baseline (master inserts alone) {base:,.0f}/s, ratio {gw / base:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
