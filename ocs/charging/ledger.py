"""The ledger: one credit-control request applied inside one write transaction.

Runs on the store's writer thread, inside a group-commit batch, against a
`txn` with get/put/delete/items/next_sequence over the named databases of
ocs/store/base.py (duck-typed: this package does not import the store). It
loads account, plan, balance and session, lets the pure engine decide, and
writes back the balance, the session, the rated events (outbox) and the
answer (for duplicates), all in the same transaction, so an answer is only
ever sent for a committed effect and a crash loses or doubles nothing.

Keys (docs/records.md): accounts/plans/balances/sessions by id (UTF-8);
identities by identity key -> account id; answers by Session-Id -> 4-octet
CC-Request-Number + the encoded answer; expiry by 8-octet big-endian second
+ b"s" (session Tcc) or b"a" (answer retention) + Session-Id; outbox by
8-octet big-endian sequence; account_sessions by account id + b"\0" +
Session-Id (empty value): the open sessions of each account, kept here
wherever a session is opened, closed or expired, so that notices.py finds
them without a scan. Each stored session records, from its latest CCR, the
peer whose connection it came on (`Session.peer`: the CER Origin-Host, a DRA's
when relayed) and the CCR's Origin-Host and Origin-Realm (the client): a
session may move to another peer after a failover, and a RAR or ASR must go to
the one that holds it now, addressed to the client.

CC-level duplicates (RFC 8506 §5.1): a request whose (Session-Id,
CC-Request-Number) equals the last one answered gets that answer again and
changes nothing. CCR-Us may arrive out of order (several in flight, one per
rating group): a number not yet processed is processed whatever its order; a
late copy of an older processed one is refused with 5004, its effect kept.
"""

from __future__ import annotations

import os
import struct
from typing import Callable

from . import balance as bal
from .engine import decide
from .model import Session
from .quota import EngineConfig
from .records import (decode_account, decode_balance, decode_plan, decode_session, encode_balance,
                      encode_event, encode_session)
from .requests import CreditRequest, Decision, RequestType, Result

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def expiry_key(when: int, kind: bytes, key: str) -> bytes:
    return _U64.pack(max(0, when)) + kind + key.encode()


def account_session_key(account_id: str, session_id: str) -> bytes:
    """Key of the account_sessions index: account id + NUL + Session-Id."""
    return account_id.encode() + b"\0" + session_id.encode()


def store_id(txn) -> str:
    """A random id per store, prefix of every rated event id."""
    sid = txn.get("meta", b"store_id")
    if sid is None:
        sid = os.urandom(6).hex().encode()
        txn.put("meta", b"store_id", sid)
    return sid.decode()


def append_events(txn, events: list, now: int) -> None:
    if not events:
        return
    defer = getattr(txn, "defer", None)
    if defer is not None:
        # a speculative run (ocs.store.speculate): the outbox sequence is drawn in
        # the write transaction, when the speculation is applied
        defer(lambda real: append_events(real, events, now))
        return
    prefix = store_id(txn)
    for e in events:
        seq = txn.next_sequence("outbox")
        e["event_id"] = f"{prefix}-{seq}"
        e["recorded"] = now
        txn.put("outbox", _U64.pack(seq), encode_event(e))


class Ledger:
    def __init__(self, config: EngineConfig = EngineConfig(), answer_retention: int = 120):
        self.config = config
        self.answer_retention = answer_retention

    def lookup_account(self, txn, identities: list) -> str | None:
        for ident in identities:
            acc = txn.get("identities", ident.encode())
            if acc is not None:
                return acc.decode()
        return None

    def credit_control(self, txn, req: CreditRequest, now: int,
                       render: Callable[[Decision], bytes]) -> tuple[bytes, Decision | None]:
        """(encoded answer, decision); decision is None for a duplicate."""
        sid = req.session_id.encode()
        prior = txn.get("answers", sid)
        if prior is not None and _U32.unpack_from(prior)[0] == req.number:
            return bytes(prior[4:]), None
        raw = txn.get("sessions", sid)
        session = decode_session(raw) if raw is not None else None
        if req.request_type == RequestType.EVENT:
            session = None
            if prior is not None:
                return bytes(prior[4:]), None
        elif prior is not None and session is None and req.request_type == RequestType.INITIAL:
            # a closed session's id used again: refuse rather than reopen it
            d = Decision.error(Result.INVALID_AVP_VALUE, "Session-Id already used",
                               ("CC-Request-Number", req.number))
            return render(d), d
        elif session is not None and session.seen(req.number):
            # a late copy of a request processed before the last one: its effect is
            # in, but only the last answer is kept, so it cannot be repeated
            d = Decision.error(Result.INVALID_AVP_VALUE,
                               f"CC-Request-Number {req.number} was already processed",
                               ("CC-Request-Number", req.number))
            return render(d), d
        account_id = session.account_id if session else self.lookup_account(txn, req.identities)
        account = plan = balance = None
        if account_id is not None:
            raw = txn.get("accounts", account_id.encode())
            account = decode_account(raw) if raw is not None else None
        if account is not None:
            raw = txn.get("plans", account.plan_id.encode())
            plan = decode_plan(raw) if raw is not None else None
            raw = txn.get("balances", account.id.encode())
            balance = decode_balance(raw) if raw is not None else None
        old_expiry = session.expires_at if session is not None else None
        d = decide(req, account, plan, balance, session, now, self.config)
        if balance is not None and (d.events or d.session is not None or d.session_closed):
            bal.prune(balance, now)
            txn.put("balances", account.id.encode(), encode_balance(balance))
        if old_expiry is not None:
            txn.delete("expiry", expiry_key(old_expiry, b"s", req.session_id))
        new: Session | None = d.session
        if new is not None:
            # a request built without its connection (tools, tests) came straight from the client
            new.peer = req.peer or req.origin_host or new.peer
            new.origin_host = req.origin_host or new.origin_host
            new.origin_realm = req.origin_realm or new.origin_realm
            txn.put("sessions", sid, encode_session(new))
            txn.put("expiry", expiry_key(new.expires_at, b"s", req.session_id), b"")
            if session is None:
                txn.put("account_sessions", account_session_key(new.account_id, req.session_id), b"")
        else:
            if session is not None:
                txn.delete("sessions", sid)
                txn.delete("account_sessions", account_session_key(session.account_id, req.session_id))
            txn.put("expiry", expiry_key(now + self.answer_retention, b"a", req.session_id), b"")
        append_events(txn, d.events, now)
        answer = render(d)
        if d.keep_answer:
            txn.put("answers", sid, _U32.pack(req.number) + answer)
        return answer, d

    def expire(self, txn, now: int, limit: int = 1000) -> int:
        """Tcc sweeper: release sessions whose supervision timer ran out, drop
        answers past retention. Returns how many entries were handled."""
        done = 0
        for key, _ in list(txn.items("expiry", b"", _U64.pack(now + 1), limit)):
            kind, sid = key[8:9], key[9:].decode()
            txn.delete("expiry", key)
            done += 1
            if kind == b"a":
                raw = txn.get("answers", key[9:])
                if raw is not None and txn.get("sessions", key[9:]) is None:
                    txn.delete("answers", key[9:])
                continue
            raw = txn.get("sessions", key[9:])
            if raw is None:
                continue
            session = decode_session(raw)
            if session.expires_at > now:
                continue
            self._release(txn, session, now)
            txn.delete("sessions", key[9:])
            txn.delete("account_sessions", account_session_key(session.account_id, sid))
            txn.put("expiry", expiry_key(now + self.answer_retention, b"a", sid), b"")
        return done

    def _release(self, txn, session: Session, now: int) -> None:
        raw_acc = txn.get("accounts", session.account_id.encode())
        raw_bal = txn.get("balances", session.account_id.encode())
        if raw_acc is None or raw_bal is None:
            return
        account, balance = decode_account(raw_acc), decode_balance(raw_bal)
        released = []
        for q in session.services.values():
            if q.impacts:
                bal.release(balance, q.impacts)
                released += q.impacts
        bal.prune(balance, now)
        txn.put("balances", account.id.encode(), encode_balance(balance))
        append_events(txn, [{
            "type": "session_expired", "account": account.id, "identity": session.identity,
            "session": session.id, "request_number": session.number, "request_type": None,
            "context": session.context, "rating_group": None, "service_id": None,
            "start": session.opened_at, "end": now,
            "units": {}, "used": {q.key: q.used for q in session.services.values()},
            "plan": account.plan_id, "rate": None, "amount": 0,
            "charged": sum(q.charged for q in session.services.values()),
            "currency": account.currency, "impacts": [], "released": released, "unpaid": 0,
            "balance_after": bal.summary(balance, now)}], now)
