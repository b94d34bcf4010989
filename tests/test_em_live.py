"""The whole chain an operator relies on: a change committed to the master database
(SQLite, then a real PostgreSQL) is picked up by the EM gateway running as its own
process, lands in the shared LMDB cache, and the node tells the P-GW holding the
session (RAR on loopback, python-diameter messages); the next CCR-U sees it (4010 for
a suspended account, a new grant after a top-up, ASR on close)."""

import subprocess
import sys
import time
import tomllib

import pytest
from diameter.message.commands import AbortSessionRequest, ReAuthRequest

from charging_peer import DATA_FILE, MSISDN, PGW_A, RATING_GROUP, UPDATE, ccr, rsu_octets, usu_octets
from ocs.charging.provision import parse_data
from ocs.gateways.master import connect
from test_reauth import Gateway, NodeThread, check_request
from test_serve import REPO


def fill_master(url: str) -> None:
    m = connect(url)
    m.migrate()
    data = tomllib.loads(DATA_FILE)
    for plan in data["plans"]:
        m.put_plan(plan)
    _, accounts = parse_data(data)
    for account, buckets in accounts:
        m.put_account(account.id, account.plan_id, account.currency, account.status,
                      account.credit_limit, account.identities, account.name)
        for b in buckets:
            if b.amount:
                m.add_adjustment(f"init-{account.id}-{b.id}", account.id, b.amount, kind=b.kind,
                                 bucket=None if b.id == "main" else b.id, expires=b.expires)
    m.close()


@pytest.fixture
def chain(master_url, tmp_path):
    fill_master(master_url)
    node = NodeThread(tmp_path, load=False)
    log = open(tmp_path / "em.log", "wb")
    em = subprocess.Popen([sys.executable, "-m", "ocs", "em-gateway", "--master", master_url,
                           "--store", node.config.store.path], cwd=REPO, stdout=log,
                          stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"following changes after" not in (tmp_path / "em.log").read_bytes():
            assert em.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "em.log").read_text()
            time.sleep(0.05)
        m = connect(master_url)
        yield node, m
        m.close()
    finally:
        em.terminate()
        assert em.wait(10) == 0, (tmp_path / "em.log").read_text()
        log.close()
        node.close()


def test_suspension_reaches_a_live_session(chain):
    node, master = chain
    sid = f"{PGW_A};carol;live"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "carol")
        assert node.main_bucket("carol") == (1000, 10)
        master.set_status("carol", "suspended")
        committed = time.monotonic()
        rar = pgw.expect(ReAuthRequest, within=10.0)
        print(f"master commit to RAR on the wire: {(time.monotonic() - committed) * 1000:.0f} ms")
        check_request(rar, sid)
        pgw.answer(rar, 2001)
        _, cca = pgw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(),
                                                         usu_octets(3000))]))
        assert cca.result_code == 4010
    assert node.main_bucket("carol") == (997, 0)      # the used 3 cents debited, nothing held


def test_top_up_and_close_reach_a_live_session(chain):
    node, master = chain
    sid = f"{PGW_A};bob;live"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "bob")
        amount, reserved = node.main_bucket("bob")
        master.add_adjustment("pay-1", "bob", 500)
        rar = pgw.expect(ReAuthRequest, within=10.0)
        check_request(rar, sid)
        pgw.answer(rar, 2002)
        assert node.main_bucket("bob")[0] == amount + 500
        _, cca = pgw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(1000))]))
        assert cca.result_code == 2001
        assert cca.multiple_services_credit_control[0].granted_service_unit.cc_total_octets == 10000
        master.set_status("bob", "closed")
        asr = pgw.expect(AbortSessionRequest, within=10.0)
        check_request(asr, sid)
        pgw.answer(asr, 2001)
    assert MSISDN["bob"]
