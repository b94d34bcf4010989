"""Prometheus metrics (issue 5): exact values on /metrics after a known sequence of
requests, with the node in process on loopback and the python-diameter peer; the
sum over processes (ocs.metrics.collect) with made-up snapshots of two workers,
one of them dead."""

from __future__ import annotations

import json
import time
import urllib.request

from diameter.message.avp.grouped import RequestedServiceUnit
from prometheus_client.parser import text_string_to_metric_families

from charging_peer import (DIRECT_DEBITING, EVENT, INITIAL, MSISDN, PGW_A, RATING_GROUP, SMS,
                           TERMINATION, UNKNOWN_MSISDN, UPDATE, ccr, rsu_octets, usu_octets)
from ocs.metrics.collect import key, read_metrics
from ocs.metrics.tally import Tally
from ocs.store.lmdb import LmdbStore
from test_reauth import Gateway, NodeThread, wait_for


def scrape(port: int) -> dict:
    """{(name, sorted labels): value} of every sample on /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def granted_octets(cca) -> int:
    return sum(m.granted_service_unit.cc_total_octets for m in cca.multiple_services_credit_control
               if m.granted_service_unit is not None)


def test_metric_values_after_a_known_sequence(tmp_path):
    node = NodeThread(tmp_path)
    try:
        with Gateway(node.port, PGW_A) as pgw:
            sid = f"{PGW_A};metrics;1"
            _, a1 = pgw.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["alice"],
                                     mscc=[(RATING_GROUP, rsu_octets(), None)]))
            _, a2 = pgw.exchange(ccr(sid, UPDATE, 1, msisdn=MSISDN["alice"],
                                     mscc=[(RATING_GROUP, rsu_octets(), usu_octets(1000))]))
            _, a3 = pgw.exchange(ccr(sid, TERMINATION, 2, msisdn=MSISDN["alice"],
                                     mscc=[(RATING_GROUP, None, usu_octets(234))]))
            _, a3dup = pgw.exchange(ccr(sid, TERMINATION, 2, msisdn=MSISDN["alice"],
                                        mscc=[(RATING_GROUP, None, usu_octets(234))]))
            _, e1 = pgw.exchange(ccr(f"{PGW_A};metrics;2", EVENT, 0, context=SMS,
                                     msisdn=MSISDN["alice"], requested_action=DIRECT_DEBITING,
                                     rsu=RequestedServiceUnit(cc_service_specific_units=1)))
            _, e2 = pgw.exchange(ccr(f"{PGW_A};metrics;3", INITIAL, 0, msisdn=UNKNOWN_MSISDN,
                                     mscc=[(RATING_GROUP, rsu_octets(), None)]))
            assert [a.result_code for a in (a1, a2, a3, a3dup, e1, e2)] == [2001] * 5 + [5030]
            granted = granted_octets(a1) + granted_octets(a2)
            assert granted > 0
            # while the peer is connected: its watchdog state is on the gauge
            wait_for(lambda: value(scrape(node.metrics_port), "ocs_peer_up",
                                   peer=PGW_A, watchdog="OKAY") == 1)
        s = None

        def settled() -> bool:
            nonlocal s
            s = scrape(node.metrics_port)
            return value(s, "ocs_diameter_requests_total", command="DPR", request_type="") == 1 \
                and value(s, "ocs_peer_up", peer=PGW_A, watchdog="OKAY") == 0
        wait_for(settled)
        ccr_total = lambda kind: value(s, "ocs_diameter_requests_total", command="CCR",
                                       request_type=kind)
        assert (ccr_total("initial"), ccr_total("update"), ccr_total("termination"),
                ccr_total("event")) == (2, 1, 2, 1)
        assert value(s, "ocs_diameter_requests_total", command="CER", request_type="") == 1
        answers = {(dict(k[1]).get("request_type"), dict(k[1]).get("result_code")): v
                   for k, v in s.items() if k[0] == "ocs_diameter_answers_total"
                   and dict(k[1]).get("command") == "CCR"}
        assert answers == {("initial", "2001"): 1, ("initial", "5030"): 1, ("update", "2001"): 1,
                           ("termination", "2001"): 2, ("event", "2001"): 1}
        assert value(s, "ocs_diameter_answers_total", command="CER", request_type="",
                     result_code="2001") == 1
        assert value(s, "ocs_diameter_answers_total", command="DPR", request_type="",
                     result_code="2001") == 1
        # latency: one observation per CCR answered (6), spread over the four types
        counts = {dict(k[1])["request_type"]: v for k, v in s.items()
                  if k[0] == "ocs_diameter_request_duration_seconds_count"}
        assert counts == {"initial": 2, "update": 1, "termination": 2, "event": 1}
        inf = value(s, "ocs_diameter_request_duration_seconds_bucket", command="CCR",
                    request_type="termination", le="+Inf")
        assert inf == 2
        assert 0 < value(s, "ocs_diameter_request_duration_seconds_sum", command="CCR",
                         request_type="termination") < 10
        # units: the duplicate termination is not counted twice
        assert value(s, "ocs_used_units_total", service="32251@3gpp.org",
                     unit="total_octets") == 1234
        assert value(s, "ocs_granted_units_total", service="32251@3gpp.org",
                     unit="total_octets") == granted
        assert value(s, "ocs_used_units_total", service=SMS, unit="service_specific_units") == 0
        assert value(s, "ocs_granted_units_total", service=SMS, unit="service_specific_units") == 1
        # store gauges, read at scrape time
        assert value(s, "ocs_sessions_open") == 0
        with node.store.read() as t:
            outbox = t.count("outbox")
        assert outbox > 0 and value(s, "ocs_outbox_events") == outbox
        assert value(s, "ocs_outbox_oldest_age_seconds") >= 0
        assert value(s, "ocs_workers") == 1
        assert value(s, "ocs_store_map_size_bytes") == node.config.store.map_size
        assert 0 < value(s, "ocs_store_map_used_bytes") <= node.config.store.map_size
        assert value(s, "ocs_store_commit_batch_size_count") >= 5
        assert value(s, "ocs_pending_requests") == 0
    finally:
        node.close()


def snapshot(process: str, at: float, tally: Tally, gauges=None, stopped=False) -> bytes:
    return json.dumps(tally.snapshot(process, 1, at, 1.0, stopped, gauges)).encode()


def test_sum_over_workers_keeps_counts_of_a_dead_one(tmp_path):
    store = LmdbStore(str(tmp_path / "s"), map_size=1 << 24)
    now = time.time()
    a, b, em = Tally(), Tally(), Tally()
    a.inc("ocs_diameter_requests_total", ("CCR", "initial"), 3)
    b.inc("ocs_diameter_requests_total", ("CCR", "initial"), 4)
    a.observe("ocs_diameter_request_duration_seconds", ("CCR", "initial"), 0.003)
    b.observe("ocs_diameter_request_duration_seconds", ("CCR", "initial"), 0.003)
    b.observe("ocs_diameter_request_duration_seconds", ("CCR", "initial"), 7.0)
    em.inc("ocs_em_gateway_changes_applied_total", (), 12)
    peer = {("ocs_peer_up", ("pgw", "OKAY")): 1}
    store.write(lambda t: [
        t.put("meta", key("node-1-1"), snapshot("node-1-1", now, a, peer)),
        # died 60 s ago: counters still count, its gauge no longer does
        t.put("meta", key("node-2-1"), snapshot("node-2-1", now - 60, b, peer)),
        t.put("meta", key("em-gateway-3-1"), snapshot("em-gateway-3-1", now, em,
                                                     {("ocs_em_gateway_lag_seconds", ()): 0.5})),
        t.put("meta", key("node-4-1"), b"not json")])
    try:
        with store.read() as t:
            m = read_metrics(t, now)
    finally:
        store.close()
    assert m["ocs_diameter_requests_total"] == {("CCR", "initial"): 7}
    counts, total = m["ocs_diameter_request_duration_seconds"][("CCR", "initial")]
    assert sum(counts) == 3 and counts[-1] == 1 and abs(total - 7.006) < 1e-9
    assert counts[3] == 2                     # 0.003 s: the le=0.005 bucket
    assert m["ocs_peer_up"] == {("pgw", "OKAY"): 1}
    assert m["ocs_workers"] == {(): 1}
    assert m["ocs_em_gateway_changes_applied_total"] == {(): 12}
    assert m["ocs_em_gateway_lag_seconds"] == {(): 0.5}


def test_em_gateway_publishes_changes_applied_and_lag(tmp_path):
    from ocs.gateways.em import Gateway
    from ocs.gateways.master import connect
    from ocs.metrics.publish import SnapshotWriter
    from test_em_gateway import populate
    import threading
    master = connect(f"sqlite:{tmp_path / 'master.db'}")
    master.migrate()
    populate(master, 3)
    store = LmdbStore(str(tmp_path / "cache"), map_size=1 << 28, durability="os")
    gw = Gateway(store, master, poll_interval=0.02)
    gw.metrics = SnapshotWriter(store, "em-gateway", 0.05)
    try:
        gw.start()
        follower = threading.Thread(target=gw.follow, daemon=True)
        follower.start()
        for i in range(5):
            master.add_adjustment(f"more-{i}", "acct-001", 10)

        def metrics():
            with store.read() as t:
                return read_metrics(t, time.time())
        wait_for(lambda: metrics()["ocs_em_gateway_changes_applied_total"].get(()) == 5)
        m = metrics()
        assert m["ocs_em_gateway_lag_seconds"][()] >= 0
        assert m["ocs_em_gateway_cursor"][()] == gw.cursor
        gw.stop.set()
        follower.join(10)
        m = metrics()                       # stopped: its count stays, its gauges go
        assert m["ocs_em_gateway_changes_applied_total"] == {(): 5}
        assert m["ocs_em_gateway_cursor"] == {}
    finally:
        gw.stop.set()
        store.close()
        master.close()


def test_grafana_dashboard_plots_every_metric_and_no_other():
    import pathlib
    import re
    from ocs.metrics.families import FAMILIES, HISTOGRAM
    path = pathlib.Path(__file__).resolve().parent.parent / "tools" / "grafana" / "ocs.json"
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", ())]
    used = set(re.findall(r"\bocs_[a-z_]+", " ".join(exprs)))
    known = set()
    for name, spec in FAMILIES.items():
        known.add(name)
        if spec[0] == HISTOGRAM:
            known |= {name + "_bucket", name + "_sum", name + "_count"}
    assert used - known == set()                      # no typo, no metric we do not export
    plotted = {n for n in FAMILIES if any(u == n or u.startswith(n + "_") for u in used)}
    assert set(FAMILIES) - plotted == set()           # every metric has a panel
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"] if "datasource" in p)
