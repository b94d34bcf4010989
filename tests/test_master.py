"""The master database API on SQLite and on a real PostgreSQL: schema, change log, validation."""

import threading

import pytest

from ocs.gateways.master import MasterError, connect
from ocs.gateways.migrations import LATEST

PLAN = {"id": "p1", "currency": "EUR", "tax": {"name": "VAT", "rate_bp": 2500},
        "tariffs": [{"context": "32251@3gpp.org", "unit": "total_octets", "price": 10,
                     "per": 1000000}]}


def test_migrate_is_versioned_and_repeatable(master):
    assert master.schema_version() == LATEST
    assert master.migrate() == []
    master.check_schema()
    assert len(master.master_id()) == 16


def test_every_change_is_logged_in_order(master):
    master.put_plan(PLAN)
    master.put_customer("c1", "Alice Andersson")
    master.put_account("a1", "p1", "EUR", identities=("e164:4670",), customer_id="c1")
    assert master.add_adjustment("t1", "a1", 500) is True
    assert master.add_adjustment("t1", "a1", 500) is False     # same id, same content: once
    master.set_status("a1", "suspended")
    changes = master.changes_after(0, 100)
    assert [(c[1], c[2]) for c in changes] == [("plan", "p1"), ("customer", "c1"), ("account", "a1"),
                                             ("adjustment", "t1"), ("account", "a1")]
    assert [c[0] for c in changes] == sorted(c[0] for c in changes)
    assert master.changes_after(changes[2][0], 100) == changes[3:]
    with master.transaction(snapshot=True) as cur:
        row, idents = master.account(cur, "a1")
        assert row[3] == "suspended" and idents == ["e164:4670"]
        assert master.plan(cur, "p1")["tax"]["rate_bp"] == 2500
        assert master.adjustment(cur, "t1")[4] == 500


def test_bad_requests_are_refused_with_a_reason(master):
    master.put_plan(PLAN)
    with pytest.raises(MasterError, match="no tariffs"):
        master.put_plan({"id": "bad", "tariffs": []})
    with pytest.raises(MasterError, match="no plan"):
        master.put_account("a1", "nope")
    with pytest.raises(MasterError, match="does not price in"):
        master.put_account("a1", "p1", "SEK")
    master.put_account("a1", "p1", identities=("e164:1",))
    with pytest.raises(MasterError, match="already belongs"):
        master.put_account("a2", "p1", identities=("e164:1",))
    master.add_adjustment("t1", "a1", 5)
    with pytest.raises(MasterError, match="other content"):
        master.add_adjustment("t1", "a1", 6)
    with pytest.raises(MasterError, match="positive"):
        master.add_adjustment("t2", "a1", -5)
    with pytest.raises(MasterError, match="no account"):
        master.set_status("zz", "closed")
    with pytest.raises(MasterError, match="status"):
        master.set_status("a1", "frozen")
    # nothing of a refused change reached the log
    assert [c[1] for c in master.changes_after(0, 100)] == ["plan", "account", "adjustment"]


def test_concurrent_writers_commit_in_change_log_order(master_url, master):
    """A follower reading up to N never later finds a smaller committed number."""
    master.put_plan(PLAN)
    master.put_account("a1", "p1")
    errors = []

    def writer(k):
        m = connect(master_url)
        try:
            for i in range(25):
                m.add_adjustment(f"t{k}-{i}", "a1", 1)
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            m.close()
    seen, last = [], 0
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) or last < master.changes_after(0, 1000)[-1][0]:
        for c in master.changes_after(last, 1000):
            seen.append(c[0])
            last = c[0]
    assert not errors
    assert len(seen) == 102 and seen == sorted(seen)      # plan, account, 100 top-ups


def test_operator_commands(master_url, capsys):
    """`ocs master`: load the demo data, top up once by reference, suspend, show, refuse."""
    import importlib.resources
    import json
    from ocs import cli
    demo = str(importlib.resources.files("ocs").joinpath("demo_data.toml"))

    def ocs(*args):
        code = cli.main(["master", "--master", master_url, *args])
        out = capsys.readouterr()
        return code, out.out.strip(), out.err.strip()
    assert ocs("migrate")[:2] == (0, "master schema at version 1 (applied 1)")
    code, out, _ = ocs("load", demo)
    assert code == 0 and json.loads(out) == {"plans": 2, "customers": 2, "accounts": 5, "new_top_ups": 5}
    assert json.loads(ocs("load", demo)[1])["new_top_ups"] == 0          # loading twice adds nothing
    assert ocs("top-up", "bob", "500", "--ref", "pay-1")[1] == "bob: top-up pay-1 recorded"
    assert ocs("top-up", "bob", "500", "--ref", "pay-1")[1] == "bob: top-up pay-1 was already recorded"
    assert ocs("adjust", "bob", "-20", "--ref", "fix-1")[1] == "bob: adjust fix-1 recorded"
    assert ocs("suspend", "carol")[1] == "carol: suspended"
    shown = json.loads(ocs("show", "bob")[1])
    assert sorted((a["id"], a["amount"]) for a in shown["adjustments"]) == [
        ("fix-1", -20), ("init-bob-main", 50), ("pay-1", 500)]
    assert json.loads(ocs("show", "alice")[1])["customer_id"] == "cust-alice"
    for args, text in [(("top-up", "bob", "-5"), "a top-up must be positive"),
                       (("top-up", "nobody", "5"), "no account 'nobody'"),
                       (("show", "nobody"), "no account 'nobody'"),
                       (("suspend", "nobody"), "no account 'nobody'"),
                       (("load", "/nonexistent.toml"), "No such file")]:
        code, _, err = ocs(*args)
        assert code == 2 and text in err and err.startswith("ocs: "), (args, err)


def test_operator_load_checks_everything_before_writing(master_url, master, tmp_path, capsys):
    from ocs import cli
    bad = tmp_path / "bad.toml"
    for text, err in [
        ('[[plans]]\nid = "p"\ncurrency = "EUR"\n[[plans.tariffs]]\ncontext = "c"\nunit = "time"\n'
         'price = 1\n[[accounts]]\nid = "a"\nplan = "p"\nbuckets = [{id = "main", amount = -5}]\n',
         "a top-up must be positive"),
        ('accounts = [1]\n', "accounts: expected a list of tables"),
    ]:
        bad.write_text(text)
        assert cli.main(["master", "--master", master_url, "load", str(bad)]) == 2
        assert err in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    plan.write_text("[1, 2]")
    assert cli.main(["master", "--master", master_url, "plan", str(plan)]) == 2
    assert "a plan must be a table" in capsys.readouterr().err
    m = connect(master_url)
    assert m.changes_after(0, 10) == []          # nothing of the refused files was written
    m.close()
