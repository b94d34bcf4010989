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
