"""`ocs accounts` and `ocs demo` as an operator runs them (subprocesses, a store
in a temp dir): provisioning, top-ups, status changes, clear errors, and the
demo charging a whole session over real Diameter."""

import json
import subprocess
import sys

from test_serve import REPO, free_port


def ocs(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "ocs", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_accounts_lifecycle(tmp_path):
    store = str(tmp_path / "store")
    plan = tmp_path / "plan.toml"
    plan.write_text('id = "voice"\ncurrency = "EUR"\n[[tariffs]]\ncontext = "32260@3gpp.org"\n'
                    'unit = "time"\nprice = 1\nper = 6\nrounding = 6\ndefault_quota = 60\n')
    assert json.loads(ocs("accounts", "--store", store, "plan", str(plan)).stdout)["id"] == "voice"
    shown = json.loads(ocs("accounts", "--store", store, "create", "erin", "--plan", "voice",
                           "--identity", "e164:46701234567", "--identity", "sip:Erin@IMS.example.org",
                           "--balance", "500", "--credit-limit", "100").stdout)
    assert shown["account"]["identities"] == ["e164:46701234567", "sip:erin@ims.example.org"]
    assert shown["totals"] == {"money": 500} and shown["available_money"] == 600
    topped = json.loads(ocs("accounts", "--store", store, "top-up", "erin", "250").stdout)
    assert topped["totals"] == {"money": 750}
    data = json.loads(ocs("accounts", "--store", store, "top-up", "erin", "1000000", "--kind",
                          "total_octets", "--expires", "4102444800").stdout)
    assert data["totals"] == {"money": 750, "total_octets": 1000000}
    assert ocs("accounts", "--store", store, "suspend", "erin").stdout.strip() == "erin: suspended"
    assert json.loads(ocs("accounts", "--store", store, "show", "erin").stdout)["account"]["status"] \
        == "suspended"
    ocs("accounts", "--store", store, "resume", "erin")
    assert json.loads(ocs("accounts", "--store", store, "sessions", "erin").stdout) == []
    events = json.loads(ocs("accounts", "--store", store, "events", "--account", "erin").stdout)
    assert [(e["type"], e["amount"]) for e in events] == [
        ("initial_balance", -500), ("top_up", -250), ("top_up", 0)]
    # clear one-line errors, exit status 2
    for args, text in [
        (("create", "erin", "--plan", "voice"), "account erin exists"),
        (("create", "x", "--plan", "nope"), "no plan 'nope'"),
        (("create", "y", "--plan", "voice", "--identity", "e164:46701234567"),
         "already belongs to account erin"),
        (("create", "z", "--plan", "voice", "--identity", "phone:1"), "unknown identity kind"),
        (("top-up", "erin", "-5"), "positive integer"),
        (("show", "nobody"), "no account 'nobody'"),
    ]:
        r = ocs("accounts", "--store", store, *args, check=False)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)


def test_demo_charges_a_session(tmp_path):
    port = free_port()
    master = f"sqlite:{tmp_path / 'master.db'}"
    demo = ("demo", "--once", "--listen", f"127.0.0.1:{port}", "--store", str(tmp_path / "store"),
            "--master", master)
    r = ocs(*demo)
    out = r.stdout
    assert f"master database {master}: 2 plans, 2 customers, 5 accounts (demo data)" in out
    assert "5 accounts loaded by the EM gateway" in out
    assert "alice CCR-I   Result-Code 2001 | RG 10; MSCC Result-Code 2001; granted CC-Total-Octets " \
           "10485760" in out
    assert "bob   CCR-U   Result-Code 2001 | RG 10; MSCC Result-Code 4012; Validity-Time 300 s; " \
           "final units: REDIRECT to " \
           "http://topup.example.net/" in out
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("  {")]
    assert [(e["account"], e["type"], e["amount"]) for e in lines] == [
        ("alice", "usage", 0), ("alice", "usage", 0), ("alice", "direct_debit", 9), ("bob", "usage", 50)]
    assert f"rated events delivered to the master database ({master})" in out
    # a second run keeps the master and the cache (and their balances) it finds
    r2 = ocs(*demo)
    assert "demo data" not in r2.stdout and "5 accounts loaded" in r2.stdout
    shown = json.loads(ocs("accounts", "--store", str(tmp_path / "store"), "show", "alice").stdout)
    assert shown["totals"]["money"] == 2000 - 2 * 9
    # the master holds every rated event of both runs, once; the cache agrees with it
    assert "master and cache agree" in ocs("em-gateway", "--master", master, "--store",
                                           str(tmp_path / "store"), "--check").stdout
    from ocs.gateways.master import connect
    m = connect(master)
    with m.transaction(snapshot=True) as cur:
        types = cur.all("SELECT type, count(*) FROM rated_events GROUP BY type ORDER BY type")
    m.close()
    assert types == [("direct_debit", 2), ("usage", 6)]


def test_status_changes_notify_once_and_a_closed_account_is_not_reauthorized(tmp_path):
    """`suspend`/`close` queue a RAR/ASR only when the status changes; a top-up of a
    closed account re-authorizes none of its sessions."""
    from charging_peer import DATA_FILE, PGW_A
    from ocs.store.lmdb import LmdbStore
    from test_notices import open_session, queued
    store = str(tmp_path / "store")
    data = tmp_path / "data.toml"
    data.write_text(DATA_FILE)
    ocs("accounts", "--store", store, "load", str(data))
    with LmdbStore(store) as st:
        open_session(st, "s-carol", "carol", PGW_A)
        open_session(st, "s-fred", "fred", PGW_A)
    for args, out in [(("suspend", "carol"), "carol: suspended (1 session(s) notified)"),
                      (("suspend", "carol"), "carol: suspended (unchanged)"),
                      (("close", "fred"), "fred: closed (1 session(s) notified)"),
                      (("close", "fred"), "fred: closed (unchanged)"),
                      (("resume", "carol"), "carol: active")]:
        assert ocs("accounts", "--store", store, *args).stdout.strip() == out, args
    ocs("accounts", "--store", store, "top-up", "fred", "100")
    with LmdbStore(store) as st:
        assert [(n["session"], n["action"]) for _, n in queued(st)] == [
            ("s-carol", "reauth"), ("s-fred", "abort")]


# `ocs demo` with its gateway loops replaced: they fail at once (or not), then SIGINT
DEMO_DRIVER = """
import sqlite3, sys
from ocs import demo
from ocs.config import Config, ListenConfig, MasterConfig, StoreConfig
from ocs.gateways import brm, em, master
from ocs.gateways.brm import DeliveryError
from ocs.gateways.em_apply import SyncError
once, port, path = sys.argv[1] == "once", int(sys.argv[2]), sys.argv[3]
if sys.argv[4] == "fail":
    def follow(self):
        raise SyncError("the cache was loaded from another master database")
    def serve(self):
        raise DeliveryError("outbox entry 7: reused event id")
    em.Gateway.follow, brm.Gateway.serve = follow, serve
opened, real = [], master.connect
def connect(url):
    opened.append(real(url))
    return opened[-1]
master.connect = connect
config = Config(listen=ListenConfig("127.0.0.1", port), store=StoreConfig(path=path + "/store"),
                master=MasterConfig("sqlite:" + path + "/master.db"))
rc = demo.run(config, once=once)
def closed(m):
    try:
        m.conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False
print(f"exit {rc}: {sum(map(closed, opened))} of {len(opened)} master connections closed", flush=True)
"""


def demo_driver(tmp_path, mode: str, fail: str):
    import subprocess
    return subprocess.Popen([sys.executable, "-c", DEMO_DRIVER, mode, str(free_port()),
                             str(tmp_path), fail], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_demo_closes_every_master_connection(tmp_path):
    p = demo_driver(tmp_path, "once", "ok")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "exit 0: 3 of 3 master connections closed" in out, (out, err)


def test_demo_says_when_a_gateway_thread_dies(tmp_path):
    """The EM gateway's loop raises SyncError, the BRM gateway's DeliveryError: each is
    logged with its traceback and reported on stderr in one line; the node goes on
    serving, and on Ctrl-C every master connection is closed."""
    import signal
    import threading
    import time
    p = demo_driver(tmp_path, "serve", "fail")
    err: list = []
    reader = threading.Thread(target=lambda: err.extend(p.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while sum("warning: the" in line for line in err) < 2:
            assert p.poll() is None and time.monotonic() < deadline, "".join(err)
            time.sleep(0.05)
        assert p.poll() is None                   # still serving
        p.send_signal(signal.SIGINT)
        out = p.stdout.read()
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    reader.join(10)
    text = "".join(err)
    assert ("ocs demo: warning: the EM gateway stopped (SyncError: the cache was loaded from "
            "another master database); the node goes on serving without it\n") in text
    assert ("ocs demo: warning: the BRM gateway stopped (DeliveryError: outbox entry 7: reused "
            "event id); the node goes on serving without it\n") in text
    assert "ERROR ocs.demo: EM gateway stopped: SyncError" in text and "Traceback" in text
    assert "serving, with the EM and BRM gateways following" in out
    assert "exit 0: 3 of 3 master connections closed" in out, (out, text)
