"""The store contract (ocs/store/base.py) checked against the LMDB backend on real disk.

Every test opens a real environment under ``tmp_path``: no mocks. Batching is
made deterministic by a "gate" function that holds the writer thread until the
test has queued the rest of the batch. Crash and multi-process tests run the
workloads of tests/store_crash_child.py in subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

import lmdb
import pytest

from ocs.store.base import SCHEMA_KEY, SCHEMA_VERSION, SchemaMismatch, StoreClosed, StoreError, StoreFull
from ocs.store.lmdb import LmdbStore

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store_crash_child.py")


@pytest.fixture
def store(tmp_path):
    s = LmdbStore(str(tmp_path / "env"), map_size=1 << 26)
    yield s
    s.close()


def put(db, key, value):
    return lambda txn: txn.put(db, key, value)


def hold_writer(store):
    """Occupy the writer until the returned event is set, so what follows forms one batch."""
    entered, release = threading.Event(), threading.Event()

    def gate(txn):
        entered.set()
        assert release.wait(10)
    store.submit(gate)
    assert entered.wait(10)
    return release


def test_put_get_delete(store):
    store.write(put("accounts", b"a", b"1"))
    assert store.write(lambda t: t.get("accounts", b"a")) == b"1"
    with store.read() as txn:
        assert txn.get("accounts", b"a") == b"1"
        assert txn.get("accounts", b"missing") is None
        assert txn.get("plans", b"a") is None  # databases are separate
    assert store.write(lambda t: t.delete("accounts", b"a")) is True
    assert store.write(lambda t: t.delete("accounts", b"a")) is False
    with store.read() as txn:
        assert txn.get("accounts", b"a") is None


def test_items_ranges_limit_reverse_and_count(store):
    def load(txn):
        for k in (b"a1", b"a2", b"b1", b"b2", b"b3", b"c1"):
            txn.put("sessions", k, k.upper())
    store.write(load)

    with store.read() as txn:
        keys = lambda **kw: [k for k, _ in txn.items("sessions", **kw)]  # noqa: E731
        assert keys() == [b"a1", b"a2", b"b1", b"b2", b"b3", b"c1"]
        assert keys(start=b"b", stop=b"c") == [b"b1", b"b2", b"b3"]
        assert keys(start=b"b1", stop=b"b3") == [b"b1", b"b2"]  # [start, stop)
        assert keys(start=b"b", stop=b"c", limit=2) == [b"b1", b"b2"]
        assert keys(start=b"b", stop=b"c", reverse=True) == [b"b3", b"b2", b"b1"]
        assert keys(start=b"b", stop=b"c", reverse=True, limit=1) == [b"b3"]
        assert keys(stop=b"b2", reverse=True) == [b"b1", b"a2", b"a1"]
        assert keys(start=b"b2", reverse=True) == [b"c1", b"b3", b"b2"]
        assert keys(start=b"d") == [] and keys(stop=b"a", reverse=True) == []
        assert keys(start=b"c", stop=b"b") == [] and keys(limit=0) == []
        assert dict(txn.items("sessions", start=b"c"))[b"c1"] == b"C1"
        assert txn.count("sessions") == 6 and txn.count("outbox") == 0
    assert store.write(lambda t: (t.put("sessions", b"z", b""), t.count("sessions"))[1]) == 7


def test_sequences_are_monotonic_transactional_and_persisted(tmp_path):
    path = str(tmp_path / "env")
    with LmdbStore(path) as store:
        assert [store.write(lambda t: t.next_sequence("ops")) for _ in range(3)] == [1, 2, 3]
        assert store.write(lambda t: t.next_sequence("other")) == 1

        def draw_then_fail(txn):
            txn.next_sequence("ops")
            raise KeyError("no")
        with pytest.raises(KeyError):
            store.write(draw_then_fail)  # the draw is rolled back with the transaction
    with LmdbStore(path) as store:
        assert store.write(lambda t: (t.next_sequence("ops"), t.next_sequence("ops"))) == (4, 5)


def test_schema_version_written_and_mismatch_refused(tmp_path):
    path = str(tmp_path / "env")
    LmdbStore(path).close()
    env = lmdb.open(path, max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(db=meta) as txn:
        assert txn.get(SCHEMA_KEY) == str(SCHEMA_VERSION).encode()
    with env.begin(write=True, db=meta) as txn:
        txn.put(SCHEMA_KEY, b"99")
    env.close()
    with pytest.raises(SchemaMismatch, match=f"99 found, {SCHEMA_VERSION} expected"):
        LmdbStore(path)
    with pytest.raises(SchemaMismatch):
        LmdbStore(path, readonly=True)


def test_readonly_store_reads_and_refuses_writes(tmp_path):
    path = str(tmp_path / "env")
    with LmdbStore(path) as store:
        store.write(put("plans", b"p", b"gold"))
    with LmdbStore(path, readonly=True) as ro:
        with ro.read() as txn:
            assert txn.get("plans", b"p") == b"gold"
        with pytest.raises(StoreClosed, match="read-only"):
            ro.submit(put("plans", b"q", b"x"))


def test_group_commit_batches_concurrent_submitters(store):
    release = hold_writer(store)
    futures: list[Future] = []
    lock = threading.Lock()

    def increment(txn):
        n = int(txn.get("meta", b"n") or b"0") + 1
        txn.put("meta", b"n", b"%d" % n)
        return n

    def submitter():
        for _ in range(50):
            f = store.submit(increment)
            with lock:
                futures.append(f)
    threads = [threading.Thread(target=submitter) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    before = store.stats.batches_committed
    release.set()
    assert sorted(f.result(10) for f in futures) == list(range(1, 401))
    assert store.stats.batches_committed - before < 5  # 400 ops, max_batch 512
    assert store.stats.max_batch_size > 100

    # unforced: many waiting threads still share commits
    ops_before, batches_before = store.stats.ops_committed, store.stats.batches_committed
    threads = [threading.Thread(target=lambda: [store.write(increment) for _ in range(25)])
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.write(lambda t: t.get("meta", b"n")) == b"800"
    assert store.stats.batches_committed - batches_before < store.stats.ops_committed - ops_before


class Refused(Exception):
    pass


def test_raising_function_is_isolated(store):
    def failing(key):
        def fn(txn):
            txn.put("accounts", key, b"partial")
            raise Refused(key)
        return fn

    release = hold_writer(store)
    futures = [store.submit(put("accounts", b"ok%d" % i, b"v")) for i in range(3)]
    bad1 = store.submit(failing(b"bad1"))  # direct run: the batch is re-run without it
    futures += [store.submit(put("accounts", b"ok%d" % i, b"v")) for i in range(3, 6)]
    bad2 = store.submit(failing(b"bad2"))  # after the first failure: a child txn, rolled back
    futures += [store.submit(put("accounts", b"ok%d" % i, b"v")) for i in range(6, 9)]
    reruns = store.stats.batch_reruns
    release.set()
    for bad, key in ((bad1, b"bad1"), (bad2, b"bad2")):
        with pytest.raises(Refused) as info:
            bad.result(10)
        assert info.value.args == (key,)
    assert [f.result(10) for f in futures] == [None] * 9
    with store.read() as txn:
        assert txn.get("accounts", b"bad1") is None and txn.get("accounts", b"bad2") is None
        assert [k for k, _ in txn.items("accounts")] == [b"ok%d" % i for i in range(9)]
    assert store.stats.batch_reruns == reruns + 1
    assert store.stats.ops_failed == 2


def test_store_full_fails_the_big_write_and_store_keeps_working(tmp_path):
    store = LmdbStore(str(tmp_path / "env"), map_size=1 << 20)

    def huge(txn):
        for i in range(100):
            txn.put("outbox", b"big%03d" % i, b"x" * 65536)
    release = hold_writer(store)
    big = store.submit(huge)
    small = store.submit(put("outbox", b"small", b"1"))
    release.set()
    with pytest.raises(StoreFull, match="map_size"):
        big.result(10)
    assert small.result(10) is None

    def swallow(txn):  # an LMDB error through the txn fails fn even if it swallows it
        try:
            huge(txn)
        except StoreFull:
            pass
    with pytest.raises(StoreFull):
        store.write(swallow)
    store.write(put("outbox", b"after", b"2"))
    with store.read() as txn:
        assert txn.get("outbox", b"small") == b"1" and txn.get("outbox", b"after") == b"2"
        assert txn.get("outbox", b"big000") is None
    assert 0 < store.map_used_bytes() <= store.map_size == 1 << 20
    store.close()


def test_readers_see_a_snapshot_and_never_block_the_writer(store):
    store.write(put("balances", b"a", b"100"))
    with store.read() as old:
        assert old.get("balances", b"a") == b"100"
        for n in range(101, 111):  # commits while the read txn stays open
            store.write(put("balances", b"a", b"%d" % n))
        assert old.get("balances", b"a") == b"100"
        assert old.count("balances") == 1
        with store.read() as new:
            assert new.get("balances", b"a") == b"110"


def test_read_from_other_threads(store):
    store.write(put("plans", b"p", b"1"))
    seen = []

    def reader():
        with store.read() as txn:
            seen.append(txn.get("plans", b"p"))
    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [b"1"] * 8


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_durability_settings_survive_reopen(tmp_path, durability):
    path = str(tmp_path / "env")
    with LmdbStore(path, durability=durability, sync_interval=0.05) as store:
        for i in range(20):
            store.submit(put("accounts", b"k%02d" % i, b"v%d" % i))
        store.write(put("accounts", b"last", b"x"))
        if durability == "os":  # the idle writer syncs within sync_interval
            deadline = time.monotonic() + 5
            while store.stats.syncs == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert store.stats.syncs >= 1
    with LmdbStore(path, durability=durability) as store, store.read() as txn:
        assert txn.count("accounts") == 21 and txn.get("accounts", b"k07") == b"v7"


def test_close_drains_pending_then_refuses(tmp_path):
    path = str(tmp_path / "env")
    store = LmdbStore(path)
    release = hold_writer(store)
    futures = [store.submit(put("sessions", b"s%03d" % i, b"x")) for i in range(50)]
    threading.Timer(0.05, release.set).start()
    store.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(StoreClosed):
        store.submit(put("sessions", b"late", b"x"))
    with pytest.raises(StoreClosed):
        with store.read():
            pass
    store.close()  # idempotent
    with LmdbStore(path) as again, again.read() as txn:
        assert txn.count("sessions") == 50


def test_custom_completer_gets_one_call_per_batch_with_any_waiter(store):
    calls = []
    store.completer = calls.append
    release = hold_writer(store)
    waiters = [object() for _ in range(5)]
    for i, w in enumerate(waiters):
        assert store.submit(lambda t, i=i: i * 10, waiter=w) is w
    store.submit(lambda t: 1 / 0, waiter="w5")
    release.set()
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    gate_batch, batch = calls  # the gate's own batch, then ours
    assert [(w, r) for w, r, e in batch[:5]] == [(w, i * 10) for i, w in enumerate(waiters)]
    assert batch[5][0] == "w5" and isinstance(batch[5][2], ZeroDivisionError)


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, CHILD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_interleave_on_one_environment(tmp_path):
    path = str(tmp_path / "env")
    LmdbStore(path).close()
    children = [spawn("increments", path, "1500") for _ in range(2)]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    with LmdbStore(path) as store, store.read() as txn:
        assert txn.get("meta", b"counter") == b"3000"
        assert [int(k) for k, _ in txn.items("sessions")] == list(range(1, 3001))
        assert len({v for _, v in txn.items("sessions")}) == 2  # both processes drew values


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_sigkill_mid_load_loses_no_acknowledged_transfer(tmp_path, durability):
    path, accounts, start = str(tmp_path / "env"), 64, 1000
    with LmdbStore(path) as store:
        store.write(lambda t: [t.put("balances", b"acct:%04d" % i, b"%d" % start)
                               for i in range(accounts)])
    child = spawn("transfers", path, durability)
    acks: list[str] = []
    enough = threading.Event()

    def read_acks():
        for line in child.stdout:
            if line.endswith("\n"):
                acks.append(line.split()[1])
                if len(acks) >= 500:
                    enough.set()
        enough.set()
    reader = threading.Thread(target=read_acks)
    reader.start()
    assert enough.wait(30)
    assert child.poll() is None, child.stderr.read()
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    child.stderr.close()
    assert len(acks) >= 500

    with LmdbStore(path, durability=durability) as store, store.read() as txn:
        balances = [int(v) for _, v in txn.items("balances")]
        assert len(balances) == accounts and sum(balances) == accounts * start
        missing = [a for a in acks if txn.get("outbox", a.encode()) is None]
        assert missing == []
        assert txn.count("outbox") >= len(acks)


def test_writer_thread_cannot_wait_for_itself(store):
    with pytest.raises(StoreError, match="writer thread"):
        store.write(lambda t: store.write(put("plans", b"x", b"1")))


def test_store_opened_before_fork_is_refused_in_the_child(store):
    pid = os.fork()
    if pid == 0:  # child: the parent's writer thread does not exist here
        try:
            store.submit(put("plans", b"child", b"1"))
            os._exit(1)
        except StoreClosed:
            os._exit(0)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.write(put("plans", b"parent", b"1"))  # the parent's store is unaffected
