"""`ocs serve --workers 2` (issue 5): two worker processes on one port and one LMDB
cache. One session's CCR-I, CCR-U and CCR-T arrive on connections that the kernel gave
to different workers (two relays carrying the same P-GW's session); the session is
charged exactly once, a retransmission on the other worker gets the first answer, and
the supervisor's /metrics adds up both workers. A worker killed with SIGKILL is started
again while the other keeps serving."""

from __future__ import annotations

import os
import signal
import time

from charging_peer import (INITIAL, MSISDN, PGW_A, RATING_GROUP, REALM, TERMINATION, UPDATE,
                           OcsProcess, RawPeer, ccr, free_port, rsu_octets, usu_octets)
from ocs.charging.records import decode_balance
from ocs.net.heartbeat import beats
from ocs.store.lmdb import LmdbStore
from test_metrics import scrape, value


def read(store_path: str, fn):
    store = LmdbStore(store_path, map_size=1 << 30, readonly=True)
    try:
        with store.read() as t:
            return fn(t)
    finally:
        store.close()


def main_amount(store_path: str, account: str) -> int:
    return read(store_path, lambda t: decode_balance(t.get("balances", account.encode()))
                .bucket("main").amount)


def worker_of(store_path: str) -> dict:
    """Origin-Host of each connected peer -> pid of the worker holding it (heartbeats)."""
    now = time.time()
    out = {}
    for b in read(store_path, beats):
        if now - b["at"] < 5:
            for host in b.get("peers", ()):
                out[host] = b["pid"]
    return out


def wait(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"{what} not met in time"
        time.sleep(0.1)
    return result


def two_relays_on_two_workers(node) -> tuple:
    """Open relay connections until two are held by different workers; close the rest."""
    relays = []
    try:
        for n in range(24):
            relay = RawPeer(node.port, f"dra-{n}.{REALM}").__enter__()
            relays.append(relay)
            seen = wait(lambda: worker_of(node.store).get(relay.origin_host.lower()),
                        what=f"{relay.origin_host} in a heartbeat")
            for other in relays[:-1]:
                if worker_of(node.store).get(other.origin_host.lower()) not in (None, seen):
                    keep = (other, relay)
                    for r in relays:
                        if r not in keep:
                            r.__exit__(None, None, None)
                    return keep
        raise AssertionError("24 connections all landed on one worker")
    except BaseException:
        for r in relays:
            r.sock.close()
        raise


def test_one_session_over_two_workers(tmp_path):
    port = free_port()
    node = OcsProcess(tmp_path, workers=2, metrics=f"127.0.0.1:{port}").start()
    try:
        before = main_amount(node.store, "alice")
        a, b = two_relays_on_two_workers(node)
        pids = worker_of(node.store)
        assert pids[a.origin_host.lower()] != pids[b.origin_host.lower()]
        sid = f"{PGW_A};spread;1"
        _, i = a.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["alice"],
                              mscc=[(RATING_GROUP, rsu_octets(), None)]))
        update = ccr(sid, UPDATE, 1, msisdn=MSISDN["alice"],
                     mscc=[(RATING_GROUP, rsu_octets(), usu_octets(500_000))])
        raw_u, u = b.exchange(update)
        # the same CCR-U again, on the other worker: the stored answer, nothing charged
        again = ccr(sid, UPDATE, 1, msisdn=MSISDN["alice"],
                    mscc=[(RATING_GROUP, rsu_octets(), usu_octets(500_000))])
        raw_again, u2 = a.exchange(again)
        _, t = b.exchange(ccr(sid, TERMINATION, 2, msisdn=MSISDN["alice"],
                              mscc=[(RATING_GROUP, None, usu_octets(250_000))]))
        assert [x.result_code for x in (i, u, u2, t)] == [2001] * 4
        assert raw_again[20:] == raw_u[20:]               # byte for byte, but its own ids
        assert (u.cc_request_number, t.cc_request_number) == (1, 2)
        assert read(node.store, lambda t: t.count("sessions")) == 0
        spent = before - main_amount(node.store, "alice")
        assert spent > 0
        # the supervisor's /metrics: both workers' counts in one total, read once each
        # worker has published a snapshot taken after its relay left (so after every
        # request that relay carried)
        def relays_up(m) -> tuple:
            return tuple(value(m, "ocs_peer_up", peer=r.origin_host, watchdog="OKAY")
                         for r in (a, b))
        wait(lambda: relays_up(scrape(port)) == (1, 1), what="both relays on /metrics")
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)
        s = wait(lambda: (m := scrape(port)) and relays_up(m) == (0, 0) and m,
                 what="both relays gone from /metrics")
        assert value(s, "ocs_workers") == 2
        assert value(s, "ocs_diameter_answers_total", command="CCR", request_type="update",
                     result_code="2001") == 2
        assert value(s, "ocs_diameter_answers_total", command="CCR", request_type="initial",
                     result_code="2001") == 1
        assert value(s, "ocs_used_units_total", service="32251@3gpp.org",
                     unit="total_octets") == 750_000
    finally:
        assert node.stop() == 0, node.log()
    assert "2 workers serving on" in node.log()


def test_a_killed_worker_is_started_again(tmp_path):
    node = OcsProcess(tmp_path, workers=2).start()
    try:
        first = wait(lambda: len(p := {b["pid"] for b in read(node.store, beats)
                                       if time.time() - b["at"] < 3}) == 2 and p)
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        wait(lambda: "exited with status -9; starting it again" in node.log(), what="restart")
        again = wait(lambda: len(p := {b["pid"] for b in read(node.store, beats)
                                       if time.time() - b["at"] < 2} - {victim}) == 2 and p,
                     timeout=15, what="a new worker's heartbeat")
        assert victim not in again and (first - {victim}) < again
        with RawPeer(node.port, PGW_A) as p:                 # serving all along
            _, cca = p.exchange(ccr(f"{PGW_A};after-kill;1", INITIAL, 0, msisdn=MSISDN["bob"],
                                    mscc=[(RATING_GROUP, rsu_octets(), None)]))
            assert cca.result_code == 2001
    finally:
        assert node.stop() == 0, node.log()


def test_workers_refuse_to_start_with_a_clear_error(tmp_path):
    import socket
    import subprocess
    import sys
    from charging_peer import REPO
    (tmp_path / "x.dict").write_text("@name x\n@avp_types\nA 1 Bogus M\n")
    r = subprocess.run([sys.executable, "-m", "ocs", "serve", "--workers", "2", "--dictionaries",
                        str(tmp_path), "--listen", "127.0.0.1:0", "--metrics", "off",
                        "--store", str(tmp_path / "store")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "ocs: worker " in r.stderr and "x.dict:3" in r.stderr, r.stderr
    with socket.socket() as taken:                   # a port someone else listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "ocs", "serve", "--workers", "2", "--listen",
                            f"127.0.0.1:{port}", "--metrics", "off",
                            "--store", str(tmp_path / "store")],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr


def test_one_connection_per_peer_across_workers(tmp_path):
    """RFC 6733 §5.6.4 across the workers: while pgw-a's connection is open on one
    worker, a second connection from pgw-a is rejected (closed without a CEA) whichever
    worker the kernel hands it to; the rejection on the other worker reads the first
    one from its heartbeat."""
    node = OcsProcess(tmp_path, workers=2).start()
    try:
        with RawPeer(node.port, PGW_A) as first:
            wait(lambda: worker_of(node.store).get(PGW_A.lower()), what="pgw-a in a heartbeat")
            for attempt in range(16):
                second = RawPeer(node.port, PGW_A)
                try:
                    second.send(__import__("charging_peer").cer(PGW_A))
                    try:
                        frame = second.recv_frame()
                    except (AssertionError, OSError, EOFError, ConnectionError):
                        frame = None
                    assert frame is None, "a second connection of pgw-a got a CEA"
                finally:
                    second.sock.close()
                if "already has a connection in worker pid" in node.log():
                    break
            else:
                raise AssertionError("16 connections never reached the other worker")
            _, cca = first.exchange(ccr(f"{PGW_A};still;1", INITIAL, 0, msisdn=MSISDN["bob"],
                                        mscc=[(RATING_GROUP, rsu_octets(), None)]))
            assert cca.result_code == 2001                 # the first is untouched
    finally:
        assert node.stop() == 0, node.log()
