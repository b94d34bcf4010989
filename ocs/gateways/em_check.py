"""`ocs em-gateway --check`: compare the master database with the cache and list differences.

Compared: every plan (as the cache stores it), every account's plan, currency,
status, credit limit, name and identities, the identity index both ways, that
every top-up/adjustment covered by the cursor has been applied, and the changes
the gateway could not apply (recorded under ``em:failed:``). Changes
after the cache's cursor are not yet applied by definition: the entities they
touch are reported as pending, not as differences.
"""

from __future__ import annotations

import json

from ..charging.records import decode_account, decode_plan, plan_from_dict, plan_to_dict
from . import em_apply as ap
from .master import Master


def check(store, master: Master, out, limit: int = 50) -> int:
    """Print differences (at most ``limit`` lines of them); return how many there are."""
    diffs: list[str] = []
    with store.read() as txn, master.transaction(snapshot=True) as cur:
        at = ap.cursor(txn)
        if at is None:
            print("cache: not loaded from a master (no EM cursor); run `ocs em-gateway`", file=out)
            return 1
        pending_rows = cur.all("SELECT entity, key FROM change_log WHERE seq > ?", (at,))
        pending = {(e, k) for e, k in pending_rows}
        last = master.last_change(cur)
        print(f"cursor {at}, master at change {last}: {last - at} change(s) not yet applied",
              file=out)
        for pid, body in cur.all("SELECT id, body FROM plans"):
            if ("plan", pid) in pending:
                continue
            want = plan_to_dict(plan_from_dict({k: v for k, v in json.loads(body).items()
                                                if k != "tax"}))
            raw = txn.get("plans", pid.encode())
            if raw is None:
                diffs.append(f"plan {pid}: missing in the cache")
            elif plan_to_dict(decode_plan(raw)) != want:
                diffs.append(f"plan {pid}: differs")
        seen = set()
        for row in master.stream(cur, f"SELECT {Master.ACCOUNT_COLUMNS} FROM accounts"):
            aid = row[0]
            seen.add(aid)
            if ("account", aid) in pending:
                continue
            _, idents = master.account(cur, aid)
            want = ap.account_from_row(tuple(row), idents)
            raw = txn.get("accounts", aid.encode())
            if raw is None:
                diffs.append(f"account {aid}: missing in the cache")
                continue
            have = decode_account(raw)
            for field in ("plan_id", "currency", "status", "credit_limit", "name"):
                if getattr(have, field) != getattr(want, field):
                    diffs.append(f"account {aid}: {field} is {getattr(have, field)!r} in the cache, "
                                 f"{getattr(want, field)!r} in the master")
            if set(have.identities) != set(want.identities):
                diffs.append(f"account {aid}: identities {sorted(have.identities)} in the cache, "
                             f"{sorted(want.identities)} in the master")
            for ident in want.identities:
                owner = txn.get("identities", ident.encode())
                if owner is None or owner.decode() != aid:
                    diffs.append(f"identity {ident}: points to "
                                 f"{owner.decode() if owner else 'nothing'} in the cache, not {aid}")
        for key, _ in txn.items("accounts"):
            if key.decode() not in seen:
                diffs.append(f"account {key.decode()}: in the cache, not in the master")
        # the identity index the other way: every cache entry must be the master's too
        # (a stray one would charge the wrong account); both sides sorted, merged
        master_ids = master.stream(cur, "SELECT identity, account_id FROM identities ORDER BY "
                                        + master.ordered("identity"))
        want = next(master_ids, None)
        for key, value in txn.items("identities"):
            ident, owner = key.decode(), value.decode()
            while want is not None and want[0] < ident:
                want = next(master_ids, None)
            if ("account", owner) in pending or (want is not None and want[0] == ident
                                                 and ("account", want[1]) in pending):
                continue
            if want is None or want[0] != ident:
                diffs.append(f"identity {ident}: points to {owner} in the cache, not in the master")
            elif want[1] != owner:
                diffs.append(f"identity {ident}: points to {owner} in the cache, {want[1]} in the master")
        for key, why in txn.items("meta", ap.FAILED, ap.FAILED[:-1] + b";"):
            diffs.append(f"{key[len(ap.FAILED):].decode()}: could not be applied: {why.decode()}")
        for (adj_id,) in master.stream(cur, "SELECT id FROM adjustments"):
            if ("adjustment", adj_id) in pending:
                continue
            if txn.get("meta", ap.APPLIED + adj_id.encode()) is None:
                diffs.append(f"adjustment {adj_id}: not applied to the cache")
    for line in diffs[:limit]:
        print(line, file=out)
    if len(diffs) > limit:
        print(f"... and {len(diffs) - limit} more", file=out)
    print(f"{len(diffs)} difference(s)" if diffs else "master and cache agree", file=out)
    return len(diffs)
