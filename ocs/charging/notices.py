"""Notices: the peers to tell when an account with open sessions changes.

RFC 8506 §5.5 (server-initiated re-authorization) and RFC 6733 §8.5 (abort
session): when the EM gateway applies a master-database change to an account
that has open credit-control sessions (suspended or topped up: re-authorize;
closed: abort), the node holding the Diameter connections must send a RAR or
an ASR to the client that holds each session. The gateway and the node are
separate processes sharing the LMDB environment, so the gateway leaves the
work in the store, in the same transaction as the change itself:

    queue_notices(txn, account_id, action, now, reason) -> sessions noticed

and the node's poller (ocs/net/notices.py) takes the notices with
`take_notices` in one write transaction of its group commit and sends them.
A notice names the peer to send on (`peer`: the connection the session's
latest CCR came on, a relay agent's through a DRA) and the client to address
(`destination_host`/`destination_realm`: that CCR's Origin-Host and
Origin-Realm, RFC 6733 §6.1 and §6.6). A closed account's sessions are not
re-authorized (its sessions get the ASR; a RAR would only bring a 5030).
Nothing here is lost if no message goes out: the cache already holds the new
status or balance, so the session's next CCR gets the new answer anyway; a
notice only makes that CCR come sooner.

Databases (docs/records.md): `account_sessions` (account id + NUL +
Session-Id -> empty; maintained by the ledger, see ledger.py) finds an
account's open sessions without a scan; `notices` (8-octet big-endian
sequence -> notice record) is the queue, in the order the notices were made.
Pure like the rest of this package: `txn` is duck-typed, `now` is given.
"""

from __future__ import annotations

import struct

from .model import CLOSED
from .records import RecordError, decode_account, decode_notice, decode_session, encode_notice

REAUTH, ABORT = "reauth", "abort"
ACTIONS = (REAUTH, ABORT)
_U64 = struct.Struct(">Q")


def queue_notices(txn, account_id: str, action: str, now: int, reason: str) -> int:
    """Queue one notice per open session of the account, for the peer that sent
    the session's latest CCR. Returns how many were queued. `action` is
    "reauth" (RAR) or "abort" (ASR); `reason` is for the logs ("suspended").
    A reauth for a closed account queues nothing."""
    if action not in ACTIONS:
        raise ValueError(f"notice action {action!r} is not one of {', '.join(ACTIONS)}")
    if action == REAUTH:
        raw = txn.get("accounts", account_id.encode())
        if raw is not None and decode_account(raw).status == CLOSED:
            return 0
    prefix = account_id.encode() + b"\0"
    queued = 0
    for key, _ in list(txn.items("account_sessions", prefix, account_id.encode() + b"\1")):
        sid = key[len(prefix):]
        raw = txn.get("sessions", sid)
        if raw is None:                     # not expected: the ledger keeps both together
            txn.delete("account_sessions", key)
            continue
        session = decode_session(raw)
        if not session.peer:                # a record written before peers were kept
            continue
        seq = txn.next_sequence("notice")
        txn.put("notices", _U64.pack(seq), encode_notice({
            "session": session.id, "peer": session.peer, "action": action,
            "account": account_id, "reason": reason, "queued": now,
            "destination_host": session.origin_host or session.peer,
            "destination_realm": session.origin_realm}))
        queued += 1
    return queued


def take_notices(txn, hosts, now: int, grace: int, limit: int = 256,
                 scan: int = 1024) -> list[tuple[dict, bool]]:
    """The notices for the peers in `hosts` (lower-case Origin-Hosts with a
    connection in this process), deleted from the queue: [(notice, True)].
    A notice for another peer is left for the process that holds its connection
    (several workers share the store) until it is `grace` seconds old; then it
    is deleted as undeliverable: [(notice, False)]. So are unreadable records
    ({"error": ...}, False). At most `limit` notices are taken and `scan`
    records looked at, oldest first. Each notice has its sequence as "seq"."""
    out: list[tuple[dict, bool]] = []
    taken = 0
    for key, raw in list(txn.items("notices", limit=scan)):
        seq = _U64.unpack(key)[0] if len(key) == 8 else None
        try:
            notice = decode_notice(raw)
            peer, queued = str(notice["peer"]).lower(), int(notice["queued"])
        except (RecordError, KeyError, TypeError, ValueError) as e:
            txn.delete("notices", key)
            out.append(({"seq": seq, "error": str(e)}, False))
            continue
        notice["seq"] = seq
        notice.pop("v", None)
        if peer in hosts:
            txn.delete("notices", key)
            out.append((notice, True))
            taken += 1
            if taken >= limit:
                break
        elif now - queued >= grace:
            txn.delete("notices", key)
            out.append((notice, False))
    return out
