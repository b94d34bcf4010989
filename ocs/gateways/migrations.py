"""Versioned schema of the master database.

Each migration is (version, description, statements). A statement is plain
SQL both SQLite and PostgreSQL accept, except where a pair
``{"sqlite": ..., "postgresql": ...}`` says otherwise. The only differences:
the change-log sequence (SQLite ``INTEGER PRIMARY KEY AUTOINCREMENT``, which
never reuses a value; PostgreSQL ``BIGSERIAL``) — the two engines have no
common spelling for an auto-numbered key.

Money and units are BIGINT minor units; times are integer epoch seconds
(``*_us`` columns: microseconds). JSON bodies are TEXT in both engines, so one
code path reads them. Never edit a released migration: add the next one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list]] = [
    (1, "customers, accounts, plans, adjustments, change log, rated events, billing", [
        """CREATE TABLE master_meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL)""",
        """CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            email TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL)""",
        """CREATE TABLE plans (
            id TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            updated_at BIGINT NOT NULL)""",
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            customer_id TEXT REFERENCES customers (id),
            plan_id TEXT NOT NULL REFERENCES plans (id),
            currency TEXT NOT NULL,
            status TEXT NOT NULL,
            credit_limit BIGINT NOT NULL DEFAULT 0,
            name TEXT NOT NULL DEFAULT '',
            updated_at BIGINT NOT NULL)""",
        """CREATE TABLE identities (
            identity TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts (id))""",
        "CREATE INDEX identities_account ON identities (account_id)",
        """CREATE TABLE adjustments (
            id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts (id),
            reason TEXT NOT NULL,
            kind TEXT NOT NULL,
            amount BIGINT NOT NULL,
            bucket TEXT,
            expires BIGINT,
            rating_groups TEXT,
            created_at BIGINT NOT NULL)""",
        "CREATE INDEX adjustments_account ON adjustments (account_id)",
        {"sqlite": """CREATE TABLE change_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            entity TEXT NOT NULL,
            key TEXT NOT NULL,
            at_us BIGINT NOT NULL)""",
         "postgresql": """CREATE TABLE change_log (
            seq BIGSERIAL PRIMARY KEY,
            entity TEXT NOT NULL,
            key TEXT NOT NULL,
            at_us BIGINT NOT NULL)"""},
        """CREATE TABLE rated_events (
            event_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            type TEXT NOT NULL,
            context TEXT,
            rating_group BIGINT,
            service_id BIGINT,
            start_at BIGINT NOT NULL,
            end_at BIGINT NOT NULL,
            amount BIGINT NOT NULL,
            unpaid BIGINT NOT NULL,
            currency TEXT NOT NULL,
            body TEXT NOT NULL,
            loaded_at BIGINT NOT NULL)""",
        "CREATE INDEX rated_events_account_end ON rated_events (account_id, end_at)",
        "CREATE INDEX rated_events_end ON rated_events (end_at)",
        """CREATE TABLE balance_snapshots (
            account_id TEXT NOT NULL,
            taken_at BIGINT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (account_id, taken_at))""",
        """CREATE TABLE bill_runs (
            id TEXT PRIMARY KEY,
            cycle TEXT NOT NULL UNIQUE,
            period_start BIGINT NOT NULL,
            period_end BIGINT NOT NULL,
            started_at BIGINT NOT NULL,
            finished_at BIGINT,
            invoices BIGINT NOT NULL DEFAULT 0)""",
        """CREATE TABLE invoices (
            id TEXT PRIMARY KEY,
            bill_run_id TEXT NOT NULL REFERENCES bill_runs (id),
            account_id TEXT NOT NULL,
            customer_id TEXT,
            cycle TEXT NOT NULL,
            currency TEXT NOT NULL,
            subtotal BIGINT NOT NULL,
            tax_name TEXT NOT NULL DEFAULT '',
            tax_rate_bp BIGINT NOT NULL DEFAULT 0,
            tax BIGINT NOT NULL,
            total BIGINT NOT NULL,
            payments BIGINT NOT NULL DEFAULT 0,
            issued_at BIGINT NOT NULL,
            UNIQUE (account_id, cycle))""",
        """CREATE TABLE invoice_lines (
            invoice_id TEXT NOT NULL REFERENCES invoices (id),
            line_no BIGINT NOT NULL,
            context TEXT,
            rating_group BIGINT,
            description TEXT NOT NULL,
            quantity BIGINT NOT NULL,
            unit TEXT NOT NULL,
            events BIGINT NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (invoice_id, line_no))""",
    ]),
]

LATEST = MIGRATIONS[-1][0]
