"""The storage contract every backend honours: names, errors, transactions, statistics.

Owns the backend-neutral vocabulary of ``ocs.store`` (design.md §4): the list of
named databases, the schema version, the exception family, the ``ReadTxn`` /
``WriteTxn`` protocols that transaction functions are written against, the
``Store`` protocol, the ``StoreStats`` counters, and ``GroupCommitter``: the
queue and single writer thread a backend plugs its batch transaction into. No
asyncio here: an adapter elsewhere replaces ``completer``.
The store is bytes-level: keys and values are ``bytes``; the charging layer
encodes its own records.

Invariants every backend keeps:
- a transaction function ``fn(txn: WriteTxn) -> result`` runs on the store's
  single writer thread, inside a write transaction shared with the other
  functions of its batch; it must be re-runnable and have no side effects
  outside ``txn`` (the backend may run it more than once, keeping only the last
  run);
- a waiter completes only after the transaction holding that function's writes
  has committed with the configured durability (an acknowledged effect is never
  lost);
- a function that raises has none of its writes committed and gets its own
  exception, unchanged; the rest of its batch still commits;
- a failed commit fails every function of that batch (``StoreFull`` when the map
  is full) and the store keeps serving later batches;
- ``items`` yields keys in ascending byte order over ``[start, stop)``
  (descending with ``reverse=True``); readers see one consistent snapshot and
  never block the writer;
- ``next_sequence`` values are committed with the transaction that drew them,
  so a committed value is never handed out again, even across restarts.
"""

from __future__ import annotations

import abc
import collections
import json
import logging
import os
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager, Iterator, Literal, Protocol

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""Bump when the layout of any database changes; a store of another version is refused.
2: ``account_sessions`` (open sessions by account) and ``notices`` (RAR/ASR queue)."""

DATABASES = ("meta", "accounts", "identities", "plans", "balances", "sessions", "expiry",
             "answers", "outbox", "account_sessions", "notices")
"""The named databases of one environment. ``meta`` holds the schema version and sequences."""

SCHEMA_KEY = b"schema_version"
"""Key in ``meta`` holding ``SCHEMA_VERSION`` as ASCII decimal."""

SEQUENCE_PREFIX = b"seq:"
"""Keys in ``meta`` holding named sequences, 8-byte big-endian last value drawn."""

def meta_json(txn, prefix: bytes) -> list[tuple[bytes, dict | None]]:
    """(key, decoded JSON object, or None when unreadable) of every ``meta`` entry whose
    key starts with ``prefix`` (process records: heartbeats, metric snapshots)."""
    out = []
    for k, value in txn.items("meta", prefix, prefix[:-1] + bytes([prefix[-1] + 1])):
        try:
            record = json.loads(bytes(value))
        except ValueError:
            record = None
        out.append((bytes(k), record if isinstance(record, dict) else None))
    return out


Durability = Literal["fsync", "os"]
"""``fsync``: every commit is on disk before its waiters complete (survives SIGKILL and
power loss). ``os``: commits reach the OS page cache (survive SIGKILL of any process);
the disk is synced every ``sync_interval`` seconds and at close. A power loss may drop
the commits since the last sync and, on a filesystem that reorders writes, damage the
environment (LMDB ``MDB_NOSYNC``): reload it from the master DB."""

DURABILITIES: tuple[str, ...] = ("fsync", "os")


class StoreError(Exception):
    """Base of every error the store raises itself."""


class SchemaMismatch(StoreError):
    """The environment on disk was written by another schema version."""


class StoreFull(StoreError):
    """The memory map is full; the operator must raise ``[store] map_size``."""


class StoreClosed(StoreError):
    """The store was closed (or opened before a ``fork()``); no new work is accepted."""


class ReadTxn(Protocol):
    """A consistent, read-only view of every database."""

    def get(self, db: str, key: bytes) -> bytes | None:
        """The value stored under ``key``, or ``None``."""

    def items(self, db: str, start: bytes = b"", stop: bytes | None = None,
              limit: int | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with ``start <= key < stop`` ascending (descending if
        ``reverse``), at most ``limit`` of them. Consume it inside the transaction."""

    def count(self, db: str) -> int:
        """Number of keys in ``db``."""


class WriteTxn(ReadTxn, Protocol):
    """A read-write view; its writes become visible to others only at commit."""

    def put(self, db: str, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""

    def delete(self, db: str, key: bytes) -> bool:
        """Remove ``key``; ``True`` if it existed."""

    def next_sequence(self, name: str) -> int:
        """Draw the next value (1, 2, ...) of the named counter kept in ``meta``."""


TxnFn = Callable[[WriteTxn], Any]
"""A transaction function: re-runnable, no side effects outside its transaction."""

Completion = tuple[Any, Any, BaseException | None]
"""(waiter, result, exception) for one function of a committed or failed batch."""

Completer = Callable[[list[Completion]], None]
"""Called once per batch on the writer thread, after the commit, to complete waiters.
It must not block, and must still resolve ``concurrent.futures.Future`` waiters
(``write()`` and callers passing no waiter use them; see ``complete_futures``)."""


def complete_futures(done: list[Completion]) -> None:
    """The default completer: resolve ``concurrent.futures.Future`` waiters.

    A waiter its caller already cancelled is left alone (the effect, if any,
    is committed regardless: cancelling cannot undo a commit)."""
    for waiter, result, exc in done:
        if waiter.done():
            continue
        try:
            if exc is None:
                waiter.set_result(result)
            else:
                waiter.set_exception(exc)
        except Exception:  # cancelled between done() and set_*: nobody is waiting
            pass


@dataclass
class StoreStats:
    """Writer counters; written only by the writer thread, read by anyone (e.g. metrics)."""

    batches_committed: int = 0
    """Write transactions committed."""
    ops_committed: int = 0
    """Transaction functions whose writes were committed."""
    ops_failed: int = 0
    """Functions that raised, plus every function of a batch whose commit failed."""
    commits_failed: int = 0
    """Batches whose commit (or begin) failed."""
    batch_reruns: int = 0
    """Times a batch was aborted and re-run to drop a function that raised."""
    last_batch_size: int = 0
    max_batch_size: int = 0
    commit_seconds_total: float = 0.0
    """Wall time spent in commit (the fsync, with durability ``fsync``)."""
    last_commit_seconds: float = 0.0
    run_seconds_total: float = 0.0
    """Wall time spent running transaction functions (including re-runs)."""
    syncs: int = 0
    """Background syncs (durability ``os``)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Store(Protocol):
    """A group-committing store: one writer thread per process, readers anywhere."""

    completer: Completer
    stats: StoreStats
    map_size: int

    def submit(self, fn: TxnFn, waiter: Any = None) -> Any:
        """Queue ``fn`` for the writer; returns ``waiter`` (a new ``Future`` if ``None``),
        completed by ``completer`` after the commit. Raises ``StoreClosed`` after close."""

    def write(self, fn: TxnFn) -> Any:
        """``submit(fn).result()``: run ``fn`` in a committed transaction and return its result."""

    def read(self) -> ContextManager[ReadTxn]:
        """A fresh read-only snapshot, usable from any thread."""

    def close(self) -> None:
        """Refuse new work, finish the pending work, sync, release. Idempotent."""

    def map_used_bytes(self) -> int:
        """Bytes of storage in use (for metrics and the map-full alarm)."""


_OPEN: "weakref.WeakSet[GroupCommitter]" = weakref.WeakSet()


def _refuse_after_fork() -> None:
    """A forked child must open its own store: the parent's writer thread is gone."""
    for store in list(_OPEN):
        store._cond = threading.Condition(threading.Lock())  # a parent thread may hold the old
        store._closing = store._forked = True


os.register_at_fork(after_in_child=_refuse_after_fork)


class GroupCommitter(abc.ABC):
    """The queue and writer thread of a store, backend-neutral.

    ``submit`` appends ``(fn, waiter)`` to a deque under one lock and notifies
    only a sleeping writer. The writer takes everything pending (at most
    ``max_batch``) and calls the backend's ``_run_batch(batch)``, which runs the
    functions in one transaction, commits, and calls ``_complete`` once. Work
    arriving meanwhile forms the next batch. When the backend sets
    ``_unsynced`` after a commit, ``_sync`` runs within ``sync_interval``
    (idle or not) and before the thread exits. Backends implement
    ``_run_batch``, ``_sync`` and ``_release`` (free resources after the
    writer stopped)."""

    def __init__(self, name: str, max_batch: int, sync_interval: float, accepting: bool) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.name = name
        self.max_batch = max_batch
        self.sync_interval = sync_interval
        self.stats = StoreStats()
        self.completer: Completer = complete_futures
        self._pending: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._idle = False
        self.readonly = not accepting
        self._closing = not accepting
        self._released = False
        self._forked = False
        self._unsynced = False
        self._last_sync = time.monotonic()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        """Start the writer (after the backend is open) if this store accepts work."""
        _OPEN.add(self)
        if not self._closing:
            self._thread = threading.Thread(target=self._writer, daemon=True,
                                            name=f"store-writer:{self.name}")
            self._thread.start()

    def submit(self, fn: TxnFn, waiter: Any = None) -> Any:
        if waiter is None:
            waiter = Future()
        with self._cond:
            if self._closing:
                raise self._closed_error()
            self._pending.append((fn, waiter))
            if self._idle:
                self._cond.notify()
        return waiter

    def write(self, fn: TxnFn) -> Any:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise StoreError("write() called on the writer thread (inside a transaction "
                             "function or completer): it would wait for itself")
        return self.submit(fn).result()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        thread = self._thread
        if thread is not None:
            if thread is threading.current_thread():
                raise StoreError("close() called on the writer thread")
            thread.join()
        if not self._released and not self._forked:
            self._released = True
            self._release()
        _OPEN.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _closed_error(self) -> StoreClosed:
        if self._forked:
            return StoreClosed(f"store {self.name} was opened before fork(): open it again here")
        if self.readonly:
            return StoreClosed(f"store {self.name} is read-only")
        return StoreClosed(f"store {self.name} is closed")

    def _writer(self) -> None:
        pending, cond, max_batch = self._pending, self._cond, self.max_batch
        while True:
            with cond:
                if not pending and not self._closing:
                    self._idle = True
                    cond.wait(None if not self._unsynced else
                              max(0.0, self._last_sync + self.sync_interval - time.monotonic()))
                    self._idle = False
                if not pending:
                    if self._closing:
                        break
                    batch = None
                elif len(pending) <= max_batch:
                    batch = list(pending)
                    pending.clear()
                else:
                    batch = [pending.popleft() for _ in range(max_batch)]
            if batch:
                try:
                    self._run_batch(batch)
                except BaseException as exc:  # a bug here must not strand the waiters
                    log.exception("store %s: batch of %d failed unexpectedly", self.name, len(batch))
                    self._complete([(w, None, StoreError(f"store writer failed: {exc!r}"))
                                    for _, w in batch])
            if self._unsynced and time.monotonic() - self._last_sync >= self.sync_interval:
                self._sync_now()
        if self._unsynced:
            self._sync_now()

    def _sync_now(self) -> None:
        try:
            self._sync()
            self.stats.syncs += 1
        except Exception:
            log.exception("store %s: background sync failed", self.name)
        self._unsynced = False
        self._last_sync = time.monotonic()

    def _complete(self, done: list[Completion]) -> None:
        try:
            self.completer(done)
        except BaseException:
            log.exception("store %s: completer failed for a batch of %d", self.name, len(done))

    # -- backend hooks ---------------------------------------------------------------

    @abc.abstractmethod
    def _run_batch(self, batch: list[tuple[TxnFn, Any]]) -> None:
        """Run ``batch`` in one transaction, commit, then ``_complete`` every waiter once."""

    @abc.abstractmethod
    def _sync(self) -> None:
        """Flush committed data to disk (durability ``os``)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free the backend once the writer has stopped."""
