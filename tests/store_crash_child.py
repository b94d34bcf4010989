"""Child process for the store contract tests: a workload that another process kills or races.

Owns nothing but its workload; the assertions live in tests/test_store_contract.py.

    store_crash_child.py transfers PATH DURABILITY   # runs until killed (bounded by MAX_OPS)
    store_crash_child.py increments PATH OPS         # OPS counter increments, then exits

``transfers``: THREADS threads each keep WINDOW transfers in flight. A transfer
reads two balances (``balances``, ASCII decimal), moves an amount, writes both
and records its op id in ``outbox``, all in one transaction function. The line
``ack <op_id>`` is printed (and flushed) only after that op's future completed,
i.e. after its commit: every acked op must survive a SIGKILL.

``increments``: two threads each add 1 to ``meta`` key ``counter`` and record the
drawn ``next_sequence("inc")`` value in ``sessions``; run in two processes at
once, the counter must add up exactly and no sequence value may repeat.
"""

from __future__ import annotations

import collections
import os
import random
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ocs.store.lmdb import LmdbStore  # noqa: E402

THREADS = 4
WINDOW = 16
MAX_OPS = 200_000  # per thread: the workload stops by itself if nobody kills it


def account_key(i: int) -> bytes:
    return b"acct:%04d" % i


def transfer(op_id: bytes, src: bytes, dst: bytes, amount: int):
    def fn(txn):
        a = int(txn.get("balances", src))
        b = int(txn.get("balances", dst))
        txn.put("balances", src, str(a - amount).encode())
        txn.put("balances", dst, str(b + amount).encode())
        txn.put("outbox", op_id, b"%s>%s:%d" % (src, dst, amount))
    return fn


def run_transfers(path: str, durability: str) -> None:
    store = LmdbStore(path, durability=durability)
    with store.read() as txn:
        accounts = txn.count("balances")
    out = threading.Lock()

    def worker(n: int) -> None:
        rng = random.Random(n)
        inflight: collections.deque = collections.deque()
        for seq in range(MAX_OPS):
            src, dst = rng.sample(range(accounts), 2)
            op_id = b"t%d-%d" % (n, seq)
            inflight.append((op_id, store.submit(transfer(op_id, account_key(src),
                                                          account_key(dst), rng.randint(1, 50)))))
            if len(inflight) >= WINDOW:
                done_id, future = inflight.popleft()
                future.result()
                with out:
                    sys.stdout.write(f"ack {done_id.decode()}\n")
                    sys.stdout.flush()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()


def run_increments(path: str, ops: int) -> None:
    def increment(txn):
        raw = txn.get("meta", b"counter")
        txn.put("meta", b"counter", str(int(raw or b"0") + 1).encode())
        seq = txn.next_sequence("inc")
        txn.put("sessions", b"%012d" % seq, str(os.getpid()).encode())

    with LmdbStore(path) as store:
        def worker(count: int) -> None:
            inflight: collections.deque = collections.deque()
            for _ in range(count):
                inflight.append(store.submit(increment))
                if len(inflight) >= 8:
                    inflight.popleft().result()
            for future in inflight:
                future.result()

        threads = [threading.Thread(target=worker, args=(c,)) for c in (ops // 2, ops - ops // 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    mode, path, arg = sys.argv[1:4]
    if mode == "transfers":
        run_transfers(path, arg)
    elif mode == "increments":
        run_increments(path, int(arg))
    else:
        sys.exit(f"unknown mode {mode!r}")
