"""Benchmark the LMDB store's group commit: ops/s and batch sizes for a small read-modify-write.

Each op reads one ~200-byte JSON balance record among ``--keys`` preloaded keys,
decrements it and writes it back, inside ``LmdbStore.submit``. Submitters are
either N threads each waiting for its op before the next (closed loop, like N
in-flight requests) or one thread submitting with a window of outstanding
futures (async-style submit-many). Every configuration runs ``--runs`` times on
the same environment; the table shows medians.

    python3 tools/bench_store.py                       # fsync and os, 1/16/64 threads + pipeline
    python3 tools/bench_store.py --keys 1000000 --threads 64 --durability fsync
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import deque

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ocs.store.lmdb import LmdbStore  # noqa: E402


def key_of(i: int) -> bytes:
    return b"acct:%08d" % i


def record(i: int) -> bytes:
    return json.dumps({"id": i, "balance": 1_000_000, "currency": "EUR", "plan": "gold-2024",
                       "state": "active", "reserved": 0, "updated": 1700000000,
                       "pad": "x" * 70}).encode()


def preload(store: LmdbStore, keys: int) -> None:
    chunk = 20_000
    for first in range(0, keys, chunk):
        def load(txn, first=first):
            for i in range(first, min(first + chunk, keys)):
                txn.put("balances", key_of(i), record(i))
        store.write(load)


def debit_fn(key: bytes):
    def debit(txn):
        rec = json.loads(txn.get("balances", key))
        rec["balance"] -= 1
        txn.put("balances", key, json.dumps(rec).encode())
        return rec["balance"]
    return debit


def run_threads(store: LmdbStore, keys: int, ops: int, threads: int) -> float:
    per = ops // threads
    start = threading.Barrier(threads + 1)

    def submitter(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(per):
            store.submit(debit_fn(key_of(rng.randrange(keys)))).result()

    pool = [threading.Thread(target=submitter, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return per * threads / (time.perf_counter() - t0)


def run_pipeline(store: LmdbStore, keys: int, ops: int, window: int) -> float:
    rng = random.Random(7)
    inflight: deque = deque()
    t0 = time.perf_counter()
    for _ in range(ops):
        if len(inflight) >= window:
            inflight.popleft().result()
        inflight.append(store.submit(debit_fn(key_of(rng.randrange(keys)))))
    while inflight:
        inflight.popleft().result()
    return ops / (time.perf_counter() - t0)


def measure(store: LmdbStore, args: argparse.Namespace, submitters: str) -> dict[str, float]:
    rates, batches, commits, maxima = [], [], [], []
    for _ in range(args.runs):
        before = store.stats.as_dict()
        store.stats.max_batch_size = 0
        if submitters == "pipe":
            rate = run_pipeline(store, args.keys, args.ops, args.window)
        else:
            rate = run_threads(store, args.keys, args.ops, int(submitters))
        after = store.stats.as_dict()
        n_batches = after["batches_committed"] - before["batches_committed"]
        n_ops = after["ops_committed"] - before["ops_committed"]
        rates.append(rate)
        batches.append(n_ops / n_batches)
        commits.append((after["commit_seconds_total"] - before["commit_seconds_total"])
                       / n_batches * 1000)
        maxima.append(after["max_batch_size"])
    return {"ops/s": statistics.median(rates), "mean batch": statistics.median(batches),
            "max batch": statistics.median(maxima), "commit ms": statistics.median(commits)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=100_000, help="balance records preloaded")
    p.add_argument("--ops", type=int, default=20_000, help="ops per run")
    p.add_argument("--runs", type=int, default=5, help="runs per configuration (median shown)")
    p.add_argument("--threads", default="1,16,64,pipe",
                   help="comma list of submitter thread counts; 'pipe' = one thread, windowed")
    p.add_argument("--window", type=int, default=1024, help="outstanding ops for 'pipe'")
    p.add_argument("--durability", default="fsync,os")
    p.add_argument("--max-batch", type=int, default=512)
    p.add_argument("--dir", default=None, help="where to create the environment (a temp dir)")
    args = p.parse_args(argv)
    print(f"keys={args.keys} ops/run={args.ops} runs={args.runs} max_batch={args.max_batch} "
          f"cpus={os.cpu_count()} python={sys.version.split()[0]}")
    print(f"{'durability':<10} {'submitters':>10} {'ops/s':>9} {'mean batch':>10} "
          f"{'max batch':>9} {'commit ms':>9}")
    for durability in args.durability.split(","):
        root = tempfile.mkdtemp(prefix="bench_store_", dir=args.dir)
        try:
            store = LmdbStore(os.path.join(root, "env"), map_size=1 << 33,
                              durability=durability, max_batch=args.max_batch)
            with store:
                preload(store, args.keys)
                for submitters in args.threads.split(","):
                    row = measure(store, args, submitters)
                    label = f"pipe/{args.window}" if submitters == "pipe" else submitters
                    print(f"{durability:<10} {label:>10} {row['ops/s']:>9.0f} "
                          f"{row['mean batch']:>10.1f} {row['max batch']:>9.0f} "
                          f"{row['commit ms']:>9.2f}", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
