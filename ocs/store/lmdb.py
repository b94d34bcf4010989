"""The LMDB backend: one environment per host, group-committed batches per process.

Owns the LMDB environment of a process (opened after start, never across
``fork()``), its named database handles, the schema check, and how one batch of
queued transaction functions becomes one write transaction (the queue and the
writer thread are ``ocs.store.base.GroupCommitter``). ``run_here`` runs a batch
the same way in the calling thread instead (the node's event loop, see
docs/architecture.md).

Group commit: the writer takes everything pending (at most ``max_batch``), runs
each function in ONE write transaction, commits once, and only then hands
``[(waiter, result, exc), ...]`` to ``completer``. Work that arrives during a
commit (the fsync) forms the next batch, so batches grow with load and
durability costs one fsync per batch, not per request. Several processes may
open one environment: LMDB's write lock serialises their batches.

Failure isolation (measured on 2 cores, see tools/bench_store.py): the happy
path runs every function directly in the batch transaction (no per-function
cost). When function ``i`` raises, the transaction is aborted and the batch
re-run: functions before ``i`` run directly again, ``i`` is skipped, and every
function after ``i`` runs in its own nested child transaction, so a further
failure is rolled back alone without another re-run (LMDB child transactions
cost ~1-2 us per function, about 10-15 % of a small read-modify-write, which
is why they are not used on the happy path). A batch therefore re-runs at most
once per failure in its direct prefix: normally once.

Invariants (see also ``ocs.store.base``):
- write transactions are opened only to run a batch: by the writer thread
  (``submit``/``write``) or by the caller of ``run_here`` (the node runs its
  batches on its event loop); LMDB's write lock serialises them, between
  threads of one process as between processes; a function's exception, or
  any LMDB error raised through its ``WriteTxn`` (even if it swallowed it),
  fails that function alone;
- a failed commit fails the whole batch; later batches proceed;
- durability ``os`` opens the environment with ``sync=False, metasync=False``
  and ``env.sync(True)`` runs at most ``sync_interval`` after a commit (when
  idle, or between batches under load) and at close;
- stale reader slots of killed processes are reclaimed at open; a killed
  writer's lock is recovered by LMDB's robust mutex.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator

import lmdb

from ocs.store.base import (DATABASES, DURABILITIES, SCHEMA_KEY, SCHEMA_VERSION, SEQUENCE_PREFIX,
                            Completion, GroupCommitter, SchemaMismatch, StoreError, StoreFull,
                            TxnFn)


def _store_error(err: lmdb.Error, map_size: int) -> StoreError:
    """Translate an LMDB error into the store's family, keeping the cause."""
    if isinstance(err, lmdb.MapFullError):
        exc: StoreError = StoreFull(
            f"LMDB map full (map_size={map_size} bytes): raise [store] map_size and restart")
    elif isinstance(err, lmdb.MapResizedError):
        exc = StoreError("another process grew the LMDB map: use the same [store] map_size "
                         "in every process")
    else:
        exc = StoreError(f"lmdb: {err}")
    exc.__cause__ = err
    return exc


class LmdbReadTxn:
    """``ReadTxn`` over one LMDB transaction (read-only, or the writer's)."""

    __slots__ = ("_txn", "_dbs", "_map_size", "error")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any], map_size: int) -> None:
        self._txn = txn
        self._dbs = dbs
        self._map_size = map_size
        self.error: StoreError | None = None  # first LMDB error seen: the txn may be poisoned

    def _fail(self, err: lmdb.Error) -> StoreError:
        exc = _store_error(err, self._map_size)
        if self.error is None:
            self.error = exc
        return exc

    def get(self, db: str, key: bytes) -> bytes | None:
        try:
            return self._txn.get(key, db=self._dbs[db])
        except lmdb.Error as err:
            raise self._fail(err) from err

    def items(self, db: str, start: bytes = b"", stop: bytes | None = None,
              limit: int | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        if limit is not None and limit <= 0:
            return
        try:
            cur = self._txn.cursor(db=self._dbs[db])
            with cur:
                if not reverse:
                    if not cur.set_range(start):
                        return
                    pairs = cur.iternext()
                else:
                    if stop is None or not cur.set_range(stop):
                        positioned = cur.last()
                    else:
                        positioned = cur.prev()
                    if not positioned:
                        return
                    pairs = cur.iterprev()
                n = 0
                for key, value in pairs:
                    if reverse:
                        if key < start:
                            return
                    elif stop is not None and key >= stop:
                        return
                    yield key, value
                    n += 1
                    if n == limit:
                        return
        except lmdb.Error as err:
            raise self._fail(err) from err

    def count(self, db: str) -> int:
        try:
            return self._txn.stat(self._dbs[db])["entries"]
        except lmdb.Error as err:
            raise self._fail(err) from err


class LmdbWriteTxn(LmdbReadTxn):
    """``WriteTxn`` handed to transaction functions; ``error`` keeps the first LMDB error."""

    __slots__ = ()

    def put(self, db: str, key: bytes, value: bytes) -> None:
        try:
            self._txn.put(key, value, db=self._dbs[db])
        except lmdb.Error as err:
            raise self._fail(err) from err

    def delete(self, db: str, key: bytes) -> bool:
        try:
            return self._txn.delete(key, db=self._dbs[db])
        except lmdb.Error as err:
            raise self._fail(err) from err

    def next_sequence(self, name: str) -> int:
        key = SEQUENCE_PREFIX + name.encode()
        raw = self.get("meta", key)
        value = (int.from_bytes(raw, "big") if raw else 0) + 1
        self.put("meta", key, value.to_bytes(8, "big"))
        return value


class LmdbStore(GroupCommitter):
    """Group-committing LMDB store (see the module docstring)."""

    def __init__(self, path: str, map_size: int = 1 << 32, durability: str = "fsync",
                 max_batch: int = 512, sync_interval: float = 1.0, readonly: bool = False) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        super().__init__(path, max_batch, sync_interval, accepting=not readonly)
        self.path = path
        self.durability = durability
        if not readonly:
            os.makedirs(path, exist_ok=True)
        nosync = durability == "os"
        try:
            self._env = lmdb.open(path, map_size=map_size, subdir=True, lock=True,
                                  readonly=readonly, create=not readonly,
                                  max_dbs=len(DATABASES), max_readers=256,
                                  sync=not nosync, metasync=not nosync)
        except lmdb.Error as err:
            raise StoreError(f"cannot open store at {path}: {err}") from err
        try:
            self._env.reader_check()  # reclaim reader slots of killed processes
            self._dbs = self._open_databases()
        except BaseException:
            self._env.close()
            raise
        self._map_size = self._env.info()["map_size"]
        self._start()

    # -- opening -----------------------------------------------------------------

    def _open_databases(self) -> dict[str, Any]:
        env = self._env
        try:
            if self.readonly:  # py-lmdb recycles a committed read txn: let open_db own its txn
                dbs = {name: env.open_db(name.encode(), create=False) for name in DATABASES}
            with env.begin(write=not self.readonly) as txn:
                if not self.readonly:
                    dbs = {name: env.open_db(name.encode(), txn=txn) for name in DATABASES}
                found = txn.get(SCHEMA_KEY, db=dbs["meta"])
                if found is None:
                    used = [n for n in DATABASES if txn.stat(dbs[n])["entries"]]
                    if used or self.readonly:
                        raise SchemaMismatch(self._mismatch("none"))
                    txn.put(SCHEMA_KEY, str(SCHEMA_VERSION).encode(), db=dbs["meta"])
                elif found != str(SCHEMA_VERSION).encode():
                    raise SchemaMismatch(self._mismatch(found.decode(errors="replace")))
        except lmdb.NotFoundError as err:
            raise SchemaMismatch(self._mismatch("none")) from err
        except lmdb.Error as err:
            raise _store_error(err, self._env.info()["map_size"]) from err
        return dbs

    def _mismatch(self, found: str) -> str:
        return (f"store {self.path}: schema version {found} found, {SCHEMA_VERSION} expected; "
                f"run the matching ocs release, or move the directory aside and reload the "
                f"cache from the master database (`ocs em-gateway` into an empty --store)")

    # -- public API --------------------------------------------------------------

    @property
    def map_size(self) -> int:
        return self._map_size

    def map_used_bytes(self) -> int:
        """Bytes of the map in use (high-water mark of allocated pages)."""
        return (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]

    @contextlib.contextmanager
    def read(self) -> Iterator[LmdbReadTxn]:
        if self._released or self._forked:
            raise self._closed_error()
        try:
            txn = self._env.begin()
        except lmdb.Error as err:
            raise _store_error(err, self._map_size) from err
        try:
            yield LmdbReadTxn(txn, self._dbs, self._map_size)
        finally:
            txn.abort()

    def snapshot(self) -> LmdbReadTxn:
        """A read-only snapshot to be ended by the caller with `end_snapshot` (for
        speculation, which keeps one open across the requests of a loop step)."""
        if self._released or self._forked:
            raise self._closed_error()
        try:
            return LmdbReadTxn(self._env.begin(), self._dbs, self._map_size)
        except lmdb.Error as err:
            raise _store_error(err, self._map_size) from err

    @staticmethod
    def end_snapshot(snapshot: LmdbReadTxn) -> None:
        snapshot._txn.abort()

    def _sync(self) -> None:
        self._env.sync(True)

    def _release(self) -> None:
        self._env.close()

    def run_here(self, batch: list[tuple[TxnFn, Any]]) -> list[Completion]:
        """Run one batch in the calling thread and return its completions instead
        of handing them to `completer`: same transaction, isolation and commit as
        the writer thread. For an event loop that is the process's only busy
        thread: py-lmdb releases the GIL on every get and put, so a writer thread
        next to a busy loop thread would hand the GIL over on each call (~300 us
        each under load) instead of ~1 us."""
        if self._closing:
            raise self._closed_error()
        out: list[Completion] = []
        self._run_batch(batch, out.extend)
        if self._unsynced:
            with self._cond:            # the writer thread syncs within sync_interval
                self._cond.notify()
        return out

    def _run_batch(self, batch: list[tuple[TxnFn, Any]], complete=None) -> None:
        complete = complete or self._complete
        env, map_size, stats = self._env, self._map_size, self.stats
        n = len(batch)
        errors: list[BaseException | None] = [None] * n
        nested_from = n  # functions from this index on run in child transactions
        t_run = time.perf_counter()
        while True:
            if all(e is not None for e in errors):  # nothing left to commit
                stats.ops_failed += n
                complete([(w, None, e) for (_, w), e in zip(batch, errors)])
                return
            try:
                txn = env.begin(write=True)
            except lmdb.Error as err:
                self._fail_batch(batch, errors, _store_error(err, map_size), complete)
                return
            results, failed_at = self._run_functions(txn, batch, errors, nested_from)
            if failed_at is None:
                break
            txn.abort()  # drop fn failed_at's partial writes; re-run without it
            nested_from = failed_at + 1
            stats.batch_reruns += 1
        t_commit = time.perf_counter()
        stats.run_seconds_total += t_commit - t_run
        try:
            txn.commit()
        except lmdb.Error as err:
            self._fail_batch(batch, errors, _store_error(err, map_size), complete)
            return
        dt = time.perf_counter() - t_commit
        failed = sum(1 for e in errors if e is not None)
        stats.batches_committed += 1
        stats.ops_committed += n - failed
        stats.ops_failed += failed
        stats.last_batch_size = n
        stats.max_batch_size = max(stats.max_batch_size, n)
        stats.last_commit_seconds = dt
        stats.commit_seconds_total += dt
        if self.durability == "os":
            self._unsynced = True
        complete([(batch[i][1], results[i], errors[i]) for i in range(n)])

    def _run_functions(self, txn: lmdb.Transaction, batch: list[tuple[TxnFn, Any]],
                       errors: list[BaseException | None],
                       nested_from: int) -> tuple[list[Any], int | None]:
        """Run the batch's functions not yet failed. Functions before ``nested_from`` run
        directly in ``txn``: the first that fails is recorded in ``errors`` and its index
        returned (``txn`` is then unusable). Later ones run in child transactions and a
        failure is rolled back alone. Returns (results, index of a direct failure or None)."""
        env, dbs, map_size = self._env, self._dbs, self._map_size
        results: list[Any] = [None] * len(batch)
        direct = LmdbWriteTxn(txn, dbs, map_size)  # an error recorded in it is fn i's own
        for i, (fn, _) in enumerate(batch):
            if errors[i] is not None:
                continue
            if i < nested_from:
                try:
                    results[i] = fn(direct)
                    exc = direct.error
                except BaseException as raised:
                    exc = raised
                if exc is not None:
                    errors[i] = exc
                    return results, i
                continue
            child = None
            try:
                child = env.begin(write=True, parent=txn)
                nested = LmdbWriteTxn(child, dbs, map_size)
                results[i] = fn(nested)
                exc = nested.error
                if exc is None:
                    child.commit()
            except lmdb.Error as err:
                exc = _store_error(err, map_size)
            except BaseException as raised:
                exc = raised
            if exc is not None:
                if child is not None:
                    child.abort()
                errors[i] = exc
                results[i] = None
        return results, None

    def _fail_batch(self, batch: list[tuple[TxnFn, Any]], errors: list[BaseException | None],
                    exc: StoreError, complete) -> None:
        """The batch transaction could not begin or commit: every function fails."""
        self.stats.commits_failed += 1
        self.stats.ops_failed += len(batch)
        done = []
        for (_, waiter), own in zip(batch, errors):
            if own is None:
                own = type(exc)(*exc.args)
                own.__cause__ = exc.__cause__
            done.append((waiter, None, own))
        complete(done)
