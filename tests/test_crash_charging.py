"""Crash safety of the charging path: SIGKILL the node in the middle of a load.

A node subprocess charges many concurrent data sessions while the test records
every CCA it received. Then the node is killed with SIGKILL (no shutdown, no
flush) and the store is reopened. Nothing acknowledged may be missing and
money must be conserved exactly:
  money now + sum of committed debits (outbox event amounts) == money at start
  reserved in buckets == reservations held by the open sessions
  every CCR-U/T acknowledged with 2001 has its usage event in the outbox
"""

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from ocs.charging.ledger import Ledger
from ocs.charging.records import decode_balance, decode_event, decode_session
from ocs.store.lmdb import LmdbStore
from test_serve import REPO, client_node, connect_when_ready, free_port

ACCOUNTS = 40
START = 1_000_000          # cents per account
MB = 1 << 20


def ocs(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ocs", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, **kw)


def ccr(client, sid, rtype, number, who, used=None, grant=True):
    mscc = {"Rating-Group": 10}
    if grant:
        mscc["Requested-Service-Unit"] = []
    if used is not None:
        mscc["Used-Service-Unit"] = {"CC-Total-Octets": used}
    return client.build("Credit-Control-Request", [
        ("Session-Id", sid), ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
        ("Service-Context-Id", "32251@3gpp.org"), ("CC-Request-Type", rtype), ("CC-Request-Number", number),
        ("Subscription-Id", {"Subscription-Id-Type": 0, "Subscription-Id-Data": f"4670{who:07d}"}),
        ("Multiple-Services-Credit-Control", mscc)])


async def load(port, proc, acked: list, stop_after: int):
    client = await connect_when_ready(port, client_node("crash.example.net"), proc)

    async def session_loop(slot: int):
        n = 0
        while len(acked) < stop_after * 3:
            n += 1
            sid = f"crash;{slot};{n}"
            who = slot % ACCOUNTS
            try:
                await client.request(ccr(client, sid, 1, 0, who), timeout=5)
                for number in (1, 2, 3):
                    used = (slot + number) * 100_000
                    rtype = 3 if number == 3 else 2
                    ans = await client.request(ccr(client, sid, rtype, number, who, used, rtype == 2),
                                               timeout=5)
                    if ans.get("Result-Code") == 2001:
                        acked.append((sid, number, used))
            except (ConnectionError, asyncio.TimeoutError, OSError):
                return
    tasks = [asyncio.create_task(session_loop(i)) for i in range(60)]
    while len(acked) < stop_after and not all(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    return tasks, client


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_sigkill_mid_load_loses_nothing(tmp_path, durability):
    store_path = str(tmp_path / "store")
    r = ocs("accounts", "--store", store_path, "generate", "--count", str(ACCOUNTS), "--balance", str(START))
    assert r.returncode == 0, r.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ocs", "serve", "--listen", f"127.0.0.1:{port}",
                             "--store", store_path, "--durability", durability, "--log-level", "warning",
                             "--workers", "1", "--metrics", "off"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    acked: list = []
    try:
        async def scenario():
            tasks, client = await load(port, proc, acked, stop_after=300)
            os.kill(proc.pid, signal.SIGKILL)        # mid-load: requests are in flight
            proc.wait(timeout=10)
            await asyncio.wait(tasks, timeout=10)
            client.conn.transport.abort()
        asyncio.run(scenario())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 300

    with LmdbStore(store_path) as store:
        with store.read() as txn:
            balances = [decode_balance(v) for _, v in txn.items("balances")]
            events = [decode_event(v) for _, v in txn.items("outbox")]
            sessions = [decode_session(v) for _, v in txn.items("sessions")]
        money = sum(b.amount for bl in balances for b in bl.buckets if b.kind == "money")
        reserved = sum(b.reserved for bl in balances for b in bl.buckets)
        debited = sum(e["amount"] for e in events)
        held = sum(amount for s in sessions for q in s.services.values() for _, amount in q.impacts)
        assert len(balances) == ACCOUNTS
        assert money + debited == ACCOUNTS * START            # exact conservation
        assert reserved == held                               # no reservation lost or leaked
        usage = {(e["session"], e["request_number"]): e for e in events if e["type"] == "usage"}
        missing = [(sid, n) for sid, n, _ in acked if (sid, n) not in usage]
        assert missing == []                                  # every acknowledged debit committed
        for sid, n, used in acked:
            assert usage[(sid, n)]["units"] == {"total_octets": used}
        # the abandoned sessions' reservations go back to the balance when Tcc runs out
        far = max(s.expires_at for s in sessions) + 1 if sessions else 0
        if sessions:
            store.write(lambda txn: Ledger().expire(txn, far, 100000))
            with store.read() as txn:
                after = [decode_balance(v) for _, v in txn.items("balances")]
                assert sum(b.reserved for bl in after for b in bl.buckets) == 0
                assert txn.count("sessions") == 0
