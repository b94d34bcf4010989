"""The master database: customers, accounts, plans, top-ups, change log, rated events, bills.

It plays BRM's database (../shared/reference/brm-ece.md A.1): it owns
customer and product data and payments; the LMDB cache owns live balances and
reservations. SQLite (stdlib) is the embedded default, PostgreSQL (psycopg 3)
the real deployment; one code path serves both (SQL is written with ``?``
placeholders and the few differences are in ``migrations.py``).

Every change an EM gateway must see goes through this API, which appends to
``change_log`` in the same transaction as the change. Change-log order is
commit order: SQLite serialises writers (``BEGIN IMMEDIATE``); on PostgreSQL a
transaction-scoped advisory lock is taken before the sequence is drawn, so a
follower that has read up to N never later finds a smaller committed number.
PostgreSQL also sends ``NOTIFY ocs_changes`` on commit to wake the EM gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from typing import Iterator

from ..charging.model import ACCOUNT_STATUSES, MONEY
from ..charging.records import RecordError, plan_from_dict
from ..charging.units import CURRENCIES, UNIT_NAMES
from .migrations import LATEST, MIGRATIONS

CHANNEL = "ocs_changes"
_LOCK_KEY = 0x6F6373  # advisory lock serialising change-log writers ("ocs")
ENTITIES = ("plan", "account", "adjustment", "customer")


class MasterError(Exception):
    """A bad request to the master or a database it cannot use; the message says which."""


MAX_AMOUNT = 1 << 62          # money and units are 64-bit in both engines and in the cache
REASONS = ("top_up", "adjustment")


MAX_ID = 200                  # octets: ids and identities are LMDB keys in the cache (<= 511)


def _check_id(what: str, value) -> None:
    if not isinstance(value, str) or not 0 < len(value.encode()) <= MAX_ID:
        raise MasterError(f"{what} must be a string of 1 to {MAX_ID} octets")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_adjustment(id, amount, kind, reason, bucket, expires, rating_groups) -> None:
    what = f"adjustment {id}"
    if not isinstance(id, str) or not 0 < len(id.encode()) <= 200:
        raise MasterError("adjustment id must be a string of 1 to 200 octets")
    if not _is_int(amount) or amount == 0 or abs(amount) > MAX_AMOUNT:
        raise MasterError(f"{what}: amount must be a non-zero integer within ±2^62")
    if reason not in REASONS:
        raise MasterError(f"{what}: reason must be one of {', '.join(REASONS)}")
    if kind != MONEY and kind not in UNIT_NAMES:
        raise MasterError(f"{what}: kind {kind!r} is neither money nor one of {', '.join(UNIT_NAMES)}")
    if bucket is not None and (not isinstance(bucket, str) or not 0 < len(bucket.encode()) <= 100):
        raise MasterError(f"{what}: bucket must be a string of 1 to 100 octets")
    if bucket is not None and bucket.startswith("adj-"):
        raise MasterError(f"{what}: bucket names starting adj- are the cache's (unnamed top-ups)")
    if bucket == "main" and (kind != MONEY or expires is not None or rating_groups):
        raise MasterError(f"{what}: bucket main is the account's money; name another bucket")
    if expires is not None and (not _is_int(expires) or not 0 < expires < 1 << 40):
        raise MasterError(f"{what}: expires must be seconds since 1970")
    if rating_groups is not None and not all(_is_int(g) and 0 <= g < 1 << 32 for g in rating_groups):
        raise MasterError(f"{what}: rating groups must be integers 0..4294967295")
    if amount < 0 and (kind != MONEY or bucket not in (None, "main") or expires is not None):
        raise MasterError(f"{what}: only money into the main balance can be negative")
    if reason == "top_up" and amount < 0:
        raise MasterError(f"{what}: a top-up must be positive")


def connect(url: str) -> "Master":
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if path.startswith("//"):
            path = path[2:]
        if path != ":memory:" and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise MasterError(f"cannot open {url}: {e}") from None
        return Master(conn, "sqlite", url)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg
        except ImportError:
            raise MasterError("PostgreSQL needs psycopg 3: pip install 'ocs[postgres]'") from None
        try:
            conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as e:
            raise MasterError(f"cannot connect to {url}: {str(e).strip()}") from None
        return Master(conn, "postgresql", url)
    raise MasterError(f"master url {url!r}: expected sqlite:PATH or postgresql://...")


def reopen(master: "Master", log) -> "Master":
    """A fresh connection to the same database in place of a broken one; the old one
    if the database cannot be reached yet (the caller tries again later)."""
    try:
        fresh = connect(master.url)
    except MasterError as e:
        log.warning("reconnect: %s", e)
        return master
    try:
        master.close()
    except Exception:                       # noqa: BLE001 - closing a broken connection
        pass
    return fresh


class Cursor:
    """One transaction's statements, ``?`` placeholders on both engines."""

    def __init__(self, master: "Master"):
        self.m = master
        self.cur = master.conn.cursor()

    def execute(self, sql: str, params: tuple = ()) -> "Cursor":
        self.cur.execute(self.m.sql(sql), params)
        return self

    def executemany(self, sql: str, rows: list) -> int:
        self.cur.executemany(self.m.sql(sql), rows)
        return self.cur.rowcount

    def one(self, sql: str, params: tuple = ()):
        return self.execute(sql, params).cur.fetchone()

    def all(self, sql: str, params: tuple = ()) -> list:
        return self.execute(sql, params).cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self.cur.rowcount


class Master:
    def __init__(self, conn, dialect: str, url: str):
        self.conn, self.dialect, self.url = conn, dialect, url
        # when changes are made (created_at, updated_at; change_log.at_us): the wall clock.
        # A cache rebuilt from the master orders top-ups and rated events by time, so the
        # master's writers and the cache's host must keep their clocks in step (NTP)
        self.clock = time.time
        self._streams = 0
        # one connection, one transaction at a time: threads sharing a Master take turns
        self._lock = threading.RLock()

    def sql(self, text: str) -> str:
        return text if self.dialect == "sqlite" else text.replace("?", "%s")

    def close(self) -> None:
        self.conn.close()

    def ordered(self, column: str) -> str:
        """``column`` sorted by code point on both engines (as Python compares strings):
        SQLite's default is already bytewise; PostgreSQL's may follow the locale."""
        return column if self.dialect == "sqlite" else f'{column} COLLATE "C"'

    @contextlib.contextmanager
    def transaction(self, snapshot: bool = False) -> Iterator[Cursor]:
        """A write transaction (or, with ``snapshot``, one consistent read view)."""
        errors = self._errors()
        with self._lock, self._translate(errors):
            yield from self._transaction(snapshot)

    @contextlib.contextmanager
    def _translate(self, errors: tuple):
        try:
            yield
        except errors as e:
            raise MasterError(f"{self.dialect}: {str(e).strip()}") from None
        except OverflowError as e:       # sqlite3: an integer past 64 bits
            raise MasterError(f"{self.dialect}: {e}") from None

    def _transaction(self, snapshot: bool):
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN" if snapshot else "BEGIN IMMEDIATE")
            try:
                yield Cursor(self)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                cur = Cursor(self)
                if snapshot:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield cur

    def _errors(self) -> tuple:
        if self.dialect == "sqlite":
            return (sqlite3.Error,)
        import psycopg
        return (psycopg.Error,)

    def stream(self, cur: Cursor, sql: str, params: tuple = (), size: int = 5000) -> Iterator[tuple]:
        """Rows of a large query without holding them all (a server-side cursor on PostgreSQL)."""
        if self.dialect == "sqlite":
            c = self.conn.cursor()
            c.execute(sql, params)
        else:
            self._streams += 1
            c = self.conn.cursor(name=f"ocs_stream_{self._streams}")
            c.itersize = size
            c.execute(self.sql(sql), params)
        while True:
            rows = c.fetchmany(size)
            if not rows:
                break
            yield from rows
        c.close()

    # -- schema ------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied, each in its own transaction."""
        applied = []
        with self.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, "
                        "description TEXT NOT NULL, applied_at BIGINT NOT NULL)")
        for version, description, statements in MIGRATIONS:
            with self.transaction() as cur:
                if self.dialect == "postgresql":
                    cur.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY + 1,))
                if cur.one("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)):
                    continue
                for st in statements:
                    cur.execute(st[self.dialect] if isinstance(st, dict) else st)
                if version == 1:
                    cur.execute("INSERT INTO master_meta (key, value) VALUES ('master_id', ?)",
                                (os.urandom(8).hex(),))
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                            (version, description, int(time.time())))
                applied.append(version)
        return applied

    def schema_version(self) -> int:
        with self.transaction(snapshot=True) as cur:
            try:
                row = cur.one("SELECT max(version) FROM schema_migrations")
            except Exception:
                return 0
        return row[0] or 0

    def check_schema(self) -> None:
        version = self.schema_version()
        if version != LATEST:
            raise MasterError(f"{self.url}: schema version {version}, this ocs needs {LATEST}"
                              " (run `ocs master migrate`)")

    def master_id(self) -> str:
        with self.transaction(snapshot=True) as cur:
            return cur.one("SELECT value FROM master_meta WHERE key = 'master_id'")[0]

    # -- changes -----------------------------------------------------------------
    def _log(self, cur: Cursor, entity: str, key: str) -> None:
        if self.dialect == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
        cur.execute("INSERT INTO change_log (entity, key, at_us) VALUES (?, ?, ?)",
                    (entity, key, int(self.clock() * 1_000_000)))
        if self.dialect == "postgresql":
            cur.execute(f"NOTIFY {CHANNEL}")

    def put_customer(self, id: str, name: str = "", email: str = "", address: str = "") -> None:
        _check_id("customer id", id)
        for field, v in (("name", name), ("email", email), ("address", address)):
            if not isinstance(v, str):
                raise MasterError(f"customer {id}: {field} must be a string")
        with self.transaction() as cur:
            cur.execute("INSERT INTO customers (id, name, email, address, created_at) VALUES "
                        "(?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                        "email = excluded.email, address = excluded.address",
                        (id, name, email, address, int(self.clock())))
            self._log(cur, "customer", id)

    def put_plan(self, body: dict) -> None:
        """Create or replace a plan (the format of ``ocs/demo_data.toml``, plus an optional
        ``tax = {name, rate_bp}``: basis points, 2500 = 25 %)."""
        if not isinstance(body, dict):
            raise MasterError("a plan must be a table (TOML) or an object (JSON)")
        try:
            plan_from_dict(body)
            text = json.dumps(body, sort_keys=True)
        except RecordError as e:
            raise MasterError(str(e)) from None
        except (TypeError, ValueError) as e:    # e.g. a TOML date where a number belongs
            raise MasterError(f"plan {body.get('id')}: {e}") from None
        _check_id("plan id", body["id"])
        tax = body.get("tax")
        if tax is not None and not (isinstance(tax, dict) and isinstance(tax.get("rate_bp"), int)
                                    and 0 <= tax["rate_bp"] <= 100000):
            raise MasterError(f"plan {body['id']}: tax must be {{name, rate_bp}} with 0 <= rate_bp")
        with self.transaction() as cur:
            cur.execute("INSERT INTO plans (id, body, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) "
                        "DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                        (body["id"], text, int(self.clock())))
            self._log(cur, "plan", body["id"])

    def put_account(self, id: str, plan_id: str, currency: str = "EUR", status: str = "active",
                    credit_limit: int = 0, identities: tuple = (), name: str = "",
                    customer_id: str | None = None) -> None:
        """Create or replace an account and its identities (identity keys, see
        ``ocs.charging.provision.parse_identity``)."""
        _check_id("account id", id)
        for ident in identities:
            _check_id(f"account {id}: identity", ident)
        if not isinstance(name, str):
            raise MasterError(f"account {id}: name must be a string")
        if status not in ACCOUNT_STATUSES:
            raise MasterError(f"account {id}: status {status!r} is not one of {', '.join(ACCOUNT_STATUSES)}")
        if currency not in CURRENCIES:
            raise MasterError(f"account {id}: unknown currency {currency!r}")
        if not isinstance(credit_limit, int) or credit_limit < 0:
            raise MasterError(f"account {id}: credit_limit must be an integer >= 0 (minor units)")
        with self.transaction() as cur:
            row = cur.one("SELECT body FROM plans WHERE id = ?", (plan_id,))
            if row is None:
                raise MasterError(f"account {id}: no plan {plan_id!r}")
            if json.loads(row[0]).get("currency", "EUR") != currency:
                raise MasterError(f"account {id}: plan {plan_id} does not price in {currency}")
            old = cur.one("SELECT currency FROM accounts WHERE id = ?", (id,))
            if old is not None and old[0] != currency:
                raise MasterError(f"account {id}: currency cannot change ({old[0]} -> {currency})")
            for ident in identities:
                owner = cur.one("SELECT account_id FROM identities WHERE identity = ?", (ident,))
                if owner is not None and owner[0] != id:
                    raise MasterError(f"identity {ident} already belongs to account {owner[0]}")
            cur.execute("INSERT INTO accounts (id, customer_id, plan_id, currency, status, credit_limit,"
                        " name, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE"
                        " SET customer_id = excluded.customer_id, plan_id = excluded.plan_id,"
                        " status = excluded.status, credit_limit = excluded.credit_limit,"
                        " name = excluded.name, updated_at = excluded.updated_at",
                        (id, customer_id, plan_id, currency, status, credit_limit, name,
                         int(self.clock())))
            cur.execute("DELETE FROM identities WHERE account_id = ?", (id,))
            for ident in identities:
                cur.execute("INSERT INTO identities (identity, account_id) VALUES (?, ?)", (ident, id))
            self._log(cur, "account", id)

    def set_status(self, id: str, status: str) -> None:
        if status not in ACCOUNT_STATUSES:
            raise MasterError(f"status {status!r} is not one of {', '.join(ACCOUNT_STATUSES)}")
        with self.transaction() as cur:
            cur.execute("UPDATE accounts SET status = ?, updated_at = ? WHERE id = ?",
                        (status, int(self.clock()), id))
            if cur.rowcount != 1:
                raise MasterError(f"no account {id!r}")
            self._log(cur, "account", id)

    def add_adjustment(self, id: str, account_id: str, amount: int, kind: str = MONEY,
                       reason: str = "top_up", bucket: str | None = None,
                       expires: int | None = None, rating_groups: tuple | None = None) -> bool:
        """Record a top-up or adjustment once (by ``id``). False when it was already recorded
        with the same content (also when two retries race); other content under the same id
        is refused. Everything the cache will need is checked here, so a change the master
        accepts is one the EM gateway can apply."""
        _check_adjustment(id, amount, kind, reason, bucket, expires, rating_groups)
        rgs = json.dumps(list(rating_groups)) if rating_groups else None
        row = (id, account_id, reason, kind, amount, bucket, expires, rgs)
        with self.transaction() as cur:
            old = self._adjustment_row(cur, id)
            if old is not None:
                if old != row:
                    raise MasterError(f"adjustment {id} exists with other content")
                return False
            if cur.one("SELECT 1 FROM accounts WHERE id = ?", (account_id,)) is None:
                raise MasterError(f"adjustment {id}: no account {account_id!r}")
            if bucket is not None:
                other = cur.one("SELECT kind FROM adjustments WHERE account_id = ? AND bucket = ? "
                                "AND kind <> ?", (account_id, bucket, kind))
                if other is not None:
                    raise MasterError(f"adjustment {id}: bucket {bucket} of {account_id} holds "
                                      f"{other[0]}, not {kind}")
            cur.execute("INSERT INTO adjustments (id, account_id, reason, kind, amount, bucket, expires,"
                        " rating_groups, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (id) DO NOTHING", row + (int(self.clock()),))
            if cur.rowcount == 0:        # a concurrent retry committed it first
                if self._adjustment_row(cur, id) != row:
                    raise MasterError(f"adjustment {id} exists with other content")
                return False
            self._log(cur, "adjustment", id)
        return True

    @staticmethod
    def _adjustment_row(cur: Cursor, id: str) -> tuple | None:
        old = cur.one("SELECT id, account_id, reason, kind, amount, bucket, expires, rating_groups"
                      " FROM adjustments WHERE id = ?", (id,))
        return tuple(old) if old is not None else None

    # -- reads -------------------------------------------------------------------
    def changes_after(self, seq: int, limit: int) -> list[tuple]:
        """(seq, entity, key, at_us) of committed changes after ``seq``, in order."""
        with self.transaction(snapshot=True) as cur:
            return [tuple(r) for r in cur.all(
                "SELECT seq, entity, key, at_us FROM change_log WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit))]

    @staticmethod
    def last_change(cur: Cursor) -> int:
        return cur.one("SELECT coalesce(max(seq), 0) FROM change_log")[0]

    ACCOUNT_COLUMNS = "id, plan_id, currency, status, credit_limit, name, customer_id"
    ADJUSTMENT_COLUMNS = "id, account_id, reason, kind, amount, bucket, expires, rating_groups"

    @staticmethod
    def account(cur: Cursor, id: str) -> tuple | None:
        """(account row, identities) or None."""
        row = cur.one(f"SELECT {Master.ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (id,))
        if row is None:
            return None
        idents = [r[0] for r in cur.all("SELECT identity FROM identities WHERE account_id = ? "
                                        "ORDER BY identity", (id,))]
        return tuple(row), idents

    @staticmethod
    def plan(cur: Cursor, id: str) -> dict | None:
        row = cur.one("SELECT body FROM plans WHERE id = ?", (id,))
        return json.loads(row[0]) if row else None

    @staticmethod
    def adjustment(cur: Cursor, id: str) -> tuple | None:
        row = cur.one(f"SELECT {Master.ADJUSTMENT_COLUMNS} FROM adjustments WHERE id = ?", (id,))
        return tuple(row) if row else None
