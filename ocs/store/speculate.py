"""Speculative execution: run a transaction function outside the write lock, then
validate and apply it inside.

LMDB has one write lock per environment, shared by every worker process. A
transaction function that spends 40 us of Python deciding a CCR inside the lock
serialises the whole node on it. `speculate(read_txn, fn)` runs `fn` first against
a read-only snapshot, through a `SpeculativeTxn` that records every value read
(absent keys included) and buffers every write. The function it returns is what
goes into the batch: inside the write transaction it re-reads the recorded keys and

- if every value is unchanged, applies the buffered writes and returns the
  speculative result: `fn` would have read the same values and, being a
  transaction function (deterministic, no effects outside its transaction),
  made the same writes and returned the same result;
- otherwise (another request or worker changed one of them meanwhile) runs `fn`
  again, in the write transaction, exactly as without speculation.

Work that needs the write transaction's own state, such as drawing from a sequence,
is handed to `txn.defer(f)` by the function: `f(real_txn)` runs at apply time
(ocs.charging.ledger.append_events does this for the outbox). A function that
calls `items`, `count` or `next_sequence` during speculation cannot be checked
this way: the speculation is dropped and `fn` runs in the write transaction.
So does one that raises (it will raise again there, and fail alone).
"""

from __future__ import annotations

from typing import Any, Callable

APPLIED, CONFLICT, UNSUPPORTED = "applied", "conflict", "unsupported"


class Unsupported(Exception):
    """The function used an operation a speculation cannot validate."""


class SpeculativeTxn:
    __slots__ = ("_snapshot", "reads", "writes", "deferred")

    def __init__(self, snapshot) -> None:
        self._snapshot = snapshot
        self.reads: dict[tuple[str, bytes], bytes | None] = {}
        self.writes: dict[tuple[str, bytes], bytes | None] = {}   # None: deleted
        self.deferred: list[Callable[[Any], Any]] = []

    def get(self, db: str, key: bytes) -> bytes | None:
        k = (db, key)
        if k in self.writes:
            return self.writes[k]
        if k in self.reads:
            return self.reads[k]
        value = self._snapshot.get(db, key)
        if value is not None:
            value = bytes(value)
        self.reads[k] = value
        return value

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.writes[(db, key)] = bytes(value)

    def delete(self, db: str, key: bytes) -> bool:
        existed = self.get(db, key) is not None
        self.writes[(db, key)] = None
        return existed

    def defer(self, fn: Callable[[Any], Any]) -> None:
        self.deferred.append(fn)

    def items(self, *args, **kwargs):
        raise Unsupported("items")

    def count(self, db: str) -> int:
        raise Unsupported("count")

    def next_sequence(self, name: str) -> int:
        raise Unsupported("next_sequence")


def speculate(snapshot, fn: Callable[[Any], Any], outcome: Callable[[str], None] | None = None):
    """The transaction function to submit in place of `fn`: the speculation's
    validate-and-apply, or `fn` itself when the speculation could not be made.
    `outcome(APPLIED | CONFLICT | UNSUPPORTED)` is called once it is known."""
    spec = SpeculativeTxn(snapshot)
    try:
        result = fn(spec)
    except Exception:                       # noqa: BLE001 - unsupported, or fn's own error:
        if outcome is not None:             # the real run decides
            outcome(UNSUPPORTED)
        return fn
    reads, writes, deferred = spec.reads, spec.writes, spec.deferred

    def apply(txn):
        get = txn.get
        for (db, key), value in reads.items():
            now = get(db, key)
            if now != value:
                if outcome is not None:
                    outcome(CONFLICT)
                return fn(txn)
        for (db, key), value in writes.items():
            if value is None:
                txn.delete(db, key)
            else:
                txn.put(db, key, value)
        for f in deferred:
            f(txn)
        if outcome is not None:
            outcome(APPLIED)
        return result
    return apply
