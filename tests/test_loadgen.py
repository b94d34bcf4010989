"""The load generator (ocs.load: `ocs load`, tools/loadgen.py) against an
in-process node on 127.0.0.1: CER, workload shape, answer counting, templates,
pacing, several driver processes, the CLI, loopback only; and
tools/bench_charging.py's refusal to run without the store."""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest

from ocs.diameter.capabilities import LocalPeer
from ocs.diameter.dictload import load_directory
from ocs.diameter.message import decode_message
from ocs.net.connection import NodeContext
from ocs.net.server import DiameterServer

from ocs import load as loadgen
from ocs.config import load_config
from ocs.load import LoadOptions, build_templates, merge, run_load
from ocs.load import cli as load_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# what a credit-control node may answer a CCR with (today: 3001, no handler yet)
KNOWN_CODES = {2001, 3001, 4012, 5030, 4010, 5031}


def small(port, **kw) -> LoadOptions:
    base = dict(port=port, requests=200, connections=2, sessions=20, subscribers=50,
                duration=None, progress=False, timeout=5.0)
    base.update(kw)
    return LoadOptions(**base)


async def start_node(registry_setup=None):
    node = NodeContext(LocalPeer("ocs.test", "localdomain"), load_directory())
    if registry_setup is not None:
        registry_setup(node)
    server = DiameterServer(node)
    await server.start("127.0.0.1", 0)
    return server


async def wait_disconnected(server, timeout=3.0):
    for _ in range(int(timeout / 0.02)):
        if not server.connections:
            return True
        await asyncio.sleep(0.02)
    return False


def check_counts(r, requests):
    assert r["requests"] == requests
    assert r["answers"] == requests and r["unanswered"] == 0 and r["lost"] == 0
    codes = r["result_codes"]
    assert all(type(c) is int for c in codes)
    assert set(codes) <= KNOWN_CODES
    assert sum(codes.values()) == requests
    assert sum(t["requests"] for t in r["by_type"].values()) == requests
    assert sum(sum(t["result_codes"].values()) for t in r["by_type"].values()) == requests
    assert r["latency_ms"]["all"]["count"] == requests
    lat = r["latency_ms"]["all"]
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_run_load_against_node():
    async def scenario():
        server = await start_node()
        r = await run_load(small(server.port))
        disconnected = await wait_disconnected(server)
        await server.stop(timeout=2)
        return r, disconnected
    r, disconnected = asyncio.run(scenario())
    check_counts(r, 200)
    # CER/CEA worked on every connection, one Origin-Host each; DPR/DPA at the end
    assert [(c["origin_host"], c["cea_result_code"], c["peer_origin_host"]) for c in r["connections"]] == [
        ("load0.localdomain", 2001, "ocs.test"), ("load1.localdomain", 2001, "ocs.test")]
    assert r["dpa_received"] == 2 and disconnected
    # sessions of I, 2 U, T over 20 slots: at most 20 sessions are still open when the
    # 200th request is sent (the slots do not move in lockstep)
    t = {k: v["requests"] for k, v in r["by_type"].items()}
    assert t["E"] == 0 and t["I"] == r["sessions_started"] and t["T"] == r["sessions_completed"]
    assert 0 <= t["I"] - t["T"] <= 20 and 2 * t["T"] <= t["U"] <= 2 * t["I"]
    assert r["stop_reason"] == "request count reached" and r["ccr_per_s"] > 0


def test_requests_reach_the_node_in_session_order():
    """A handler records what the node decodes: each session is I(0), U(1), U(2),
    T(3) with one subscriber, Origin-Host per connection, and the MSCC content;
    its answers carry an MSCC-level Result-Code that loadgen counts."""
    seen = []

    async def handler(msg, ctx):
        mscc = msg.find("Multiple-Services-Credit-Control")
        usu = mscc.find("Used-Service-Unit") if mscc is not None else None
        seen.append((ctx.peer.origin_host, msg.get("Origin-Host"), msg.get("Session-Id"),
                     msg.get("CC-Request-Type"), msg.get("CC-Request-Number"),
                     msg.find("Subscription-Id").get("Subscription-Id-Type"),
                     msg.find("Subscription-Id").get("Subscription-Id-Data"),
                     msg.get("Service-Context-Id"),
                     mscc.get("Rating-Group") if mscc is not None else None,
                     mscc.find("Requested-Service-Unit") is not None if mscc is not None else None,
                     usu.get("CC-Total-Octets") if usu is not None else None))
        ans = msg.answer(2001)
        ans.extend([("Origin-Host", "ocs.test"), ("Origin-Realm", "localdomain"),
                    ("Auth-Application-Id", 4), ("CC-Request-Type", msg.get("CC-Request-Type")),
                    ("CC-Request-Number", msg.get("CC-Request-Number"))])
        if mscc is not None:
            ans.add("Multiple-Services-Credit-Control", [("Rating-Group", 10), ("Result-Code", 4012)])
        return ans

    async def scenario():
        server = await start_node(lambda node: node.registry.register(4, 272, handler))
        r = await run_load(small(server.port, requests=120, sessions=6, subscribers=3,
                                 subscriber_first=5, octets=12345))
        await server.stop(timeout=2)
        return r
    r = asyncio.run(scenario())
    check_counts(r, 120)
    assert r["result_codes"] == {2001: 120}
    assert r["mscc_result_codes"] == {4012: 120}
    sessions = {}
    for peer, origin, sid, typ, num, sub_type, sub, ctx, rg, rsu, octets in seen:
        assert peer == origin and sid.startswith(origin + ";") and len(sid.rsplit(";", 1)[1]) == 12
        assert sub_type == 0 and ctx == "32251@3gpp.org" and rg == 10
        assert sub in {"46700000005", "46700000006", "46700000007"}
        assert rsu == (typ in (1, 2)) and octets == (None if typ == 1 else 12345)
        sessions.setdefault(sid, []).append((typ, num, sub))
    assert len({o for o, *_ in seen}) == 2 and len(seen) == 120
    full = [(1, 0), (2, 1), (2, 2), (3, 3)]
    open_sessions = 0
    for steps in sessions.values():
        numbers = [(t, n) for t, n, _ in steps]
        assert numbers == full[:len(numbers)]          # the last ones may be cut by the bound
        open_sessions += numbers != full
        assert len({s for *_, s in steps}) == 1
    assert open_sessions <= 6 and r["sessions_completed"] == len(sessions) - open_sessions


def test_templates_patch_and_decode():
    d = load_directory()
    opts = LoadOptions(subscriber_prefix="4670", subscriber_digits=7, octets=777, updates=1)
    templates = build_templates(d, opts, "load7.localdomain", 123456)
    assert [t.kind for t in templates] == [0, 1, 2, 3]
    for t in templates:
        data = t.render(0xA1B2C3D4, 0x01020304, 42, 5, 1234)
        msg, errors = decode_message(data, d, check=True)
        assert errors == []
        assert (msg.hop_by_hop, msg.end_to_end, msg.code, msg.application_id) == (0xA1B2C3D4, 0x01020304, 272, 4)
        assert msg.get("Session-Id") == "load7.localdomain;123456;000000000042"
        assert msg.get("CC-Request-Number") == 5
        assert msg.find("Subscription-Id").get("Subscription-Id-Data") == "46700001234"
        assert msg.get("Origin-Host") == "load7.localdomain"
        assert msg.get("Destination-Realm") == "localdomain" and msg.get("Auth-Application-Id") == 4
        assert len(data) == len(t.data)
    i, u, t, e = (decode_message(x.render(1, 2, 3, 0, 9), d)[0] for x in templates)
    assert [m.get("CC-Request-Type") for m in (i, u, t, e)] == [1, 2, 3, 4]
    assert e.get("Service-Context-Id") == "32274@3gpp.org" and e.get("Requested-Action") == 0
    assert e.find("Requested-Service-Unit").get("CC-Service-Specific-Units") == 1
    assert t.find("Multiple-Services-Credit-Control").find("Requested-Service-Unit") is None
    assert u.find("Multiple-Services-Credit-Control").find("Used-Service-Unit").get("CC-Total-Octets") == 777


def test_event_ratio_and_rate():
    async def scenario():
        server = await start_node()
        events = await run_load(small(server.port, requests=60, event_ratio=1.0, seed=1))
        paced = await run_load(small(server.port, requests=None, duration=0.6, rate=250.0,
                                     host_first=10))
        await server.stop(timeout=2)
        return events, paced
    events, paced = asyncio.run(scenario())
    check_counts(events, 60)
    assert events["by_type"]["E"]["requests"] == 60 and events["sessions_started"] == 60
    # 250/s for 0.6 s: about 150 requests, every one answered
    assert 75 <= paced["requests"] <= 160 and paced["answers"] == paced["requests"]
    assert paced["stop_reason"] == "duration reached"
    assert [c["origin_host"] for c in paced["connections"]] == ["load10.localdomain", "load11.localdomain"]


def test_processes_merge():
    async def scenario():
        server = await start_node()
        r = await run_load(small(server.port, processes=2, requests=201, connections=3, sessions=21))
        await server.stop(timeout=2)
        return r
    r = asyncio.run(scenario())
    check_counts(r, 201)
    assert r["processes"] == 2
    per = r["per_process"]
    assert [p["requests"] for p in per] == [101, 100]
    assert [p["connections"] for p in per] == [2, 1] and sum(p["sessions"] for p in per) == 21
    assert sum(p["answers"] for p in per) == r["answers"]
    merged_codes = {}
    for p in per:
        for k, v in p["result_codes"].items():
            merged_codes[k] = merged_codes.get(k, 0) + v
    assert merged_codes == r["result_codes"]
    assert sorted(c["origin_host"] for c in r["connections"]) == [
        "load0.localdomain", "load1.localdomain", "load2.localdomain"]


def test_partition_and_merge_pure():
    parts = loadgen.partition(LoadOptions(processes=3, connections=4, sessions=10, requests=7,
                                          subscribers=10, rate=300.0), None)
    assert [p["hosts"] for p in parts] == [[0, 1], [2], [3]]
    assert [p["sessions"] for p in parts] == [4, 3, 3]
    assert [p["requests"] for p in parts] == [3, 2, 2]
    assert [p["subscribers"] for p in parts] == [(0, 4), (4, 7), (7, 10)]
    assert {p["rate"] for p in parts} == {100.0}

    def raw(i, sent, codes, lat, t0, t1):
        import array
        return {"index": i, "connections": [{"origin_host": f"load{i}"}], "sessions": 1,
                "sent": sent, "answered": sent, "codes": codes, "mscc_codes": [{}, {}, {}, {}],
                "lat": [array.array("d", x).tobytes() for x in lat], "measured": sum(sent),
                "t_start": t0, "t_measure": t0, "t_end": t1, "outstanding": 0, "lost": 0,
                "unmatched": 0, "dpa": 1, "cpu_s": 0.1, "sessions_started": 1, "sessions_completed": 1,
                "stop_reason": "request count reached", "notes": []}
    a = raw(0, [1, 2, 0, 0], [{3001: 1}, {3001: 1, 2001: 1}, {}, {}],
            [[0.001], [0.002, 0.003], [], []], 10.0, 11.0)
    b = raw(1, [1, 0, 1, 0], [{2001: 1}, {}, {4012: 1}, {}], [[0.004], [], [0.005], []], 10.5, 12.0)
    m = merge([a, b])
    assert m["requests"] == 5 and m["answers"] == 5
    assert m["result_codes"] == {2001: 2, 3001: 2, 4012: 1}
    assert m["by_type"]["I"]["requests"] == 2 and m["by_type"]["I"]["result_codes"] == {2001: 1, 3001: 1}
    assert m["latency_ms"]["all"]["max"] == 5.0 and m["latency_ms"]["all"]["count"] == 5
    assert m["latency_ms"]["I"]["p50"] == 1.0 and m["latency_ms"]["U"]["p99"] == 3.0
    assert m["elapsed_s"] == 2.0 and m["ccr_per_s"] == 2.5
    assert [p["requests"] for p in m["per_process"]] == [3, 2]


def test_stalled_node_ends_the_run():
    """A node that never answers: the run still ends, counting the requests unanswered."""
    async def never(msg, ctx):
        await asyncio.sleep(3600)

    async def scenario():
        server = await start_node(lambda node: node.registry.register(4, 272, never))
        r = await run_load(small(server.port, requests=10, sessions=10, timeout=1.0))
        await server.stop(timeout=1)
        return r
    r = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert r["requests"] == 10 and r["answers"] == 0 and r["unanswered"] == 10


def test_unreachable_node_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="cannot open 2 of 2 connection"):
        asyncio.run(run_load(small(free_port, timeout=2.0)))


def test_cli_json():
    async def scenario():
        server = await start_node()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.join(REPO, "tools", "loadgen.py"), "--port", str(server.port),
            "--requests", "100", "--connections", "1", "--sessions", "10", "--json", "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        await server.stop(timeout=2)
        return proc.returncode, out, err
    rc, out, err = asyncio.run(scenario())
    assert rc == 0, err
    r = json.loads(out)
    assert r["requests"] == 100 and r["answers"] == 100
    assert set(map(int, r["result_codes"])) <= KNOWN_CODES


def test_loopback_only():
    """The load generator refuses a host that is not a loopback address: in the
    options (run_load), the tools/loadgen.py CLI and `ocs load`, with exit status 2."""
    for host in ("127.0.0.1", "127.45.6.7", "::1", "localhost", "LOCALHOST"):
        LoadOptions(host=host).validate()
    for host in ("10.0.0.1", "192.0.2.1", "0.0.0.0", "::", "2001:db8::1", "example.com", "", "::ffff:10.0.0.1"):
        with pytest.raises(ValueError, match="not a loopback address"):
            LoadOptions(host=host).validate()
    with pytest.raises(ValueError, match="not a loopback address"):
        asyncio.run(run_load(small(3868, host="192.0.2.1")))
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "loadgen.py"), "--host", "192.0.2.1",
                        "--requests", "1", "--quiet"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "--host '192.0.2.1' is not a loopback address" in r.stderr

    # `ocs load` as ocs/cli.py runs an external module: add_parser, then run(args, config)
    p = argparse.ArgumentParser(prog="ocs")
    sub = p.add_subparsers(dest="command", required=True)
    load_cli.add_parser(sub)
    args = p.parse_args(["load", "--host", "10.1.2.3", "--requests", "1", "-q"])
    assert args.command == load_cli.COMMAND == "load"
    assert load_cli.run(args, load_config(None)) == 2


def test_ocs_load_subcommand(tmp_path, capsys):
    """`ocs load --config X`: the port comes from [listen] unless --port is given."""
    async def scenario():
        server = await start_node()
        config = tmp_path / "ocs.toml"
        config.write_text(f'[listen]\naddress = "127.0.0.1"\nport = {server.port}\n')
        p = argparse.ArgumentParser(prog="ocs")
        sub = p.add_subparsers(dest="command", required=True)
        load_cli.add_parser(sub)
        args = p.parse_args(["load", "--config", str(config), "--requests", "50", "--connections", "1",
                             "--sessions", "5", "--json", "--quiet"])
        rc = await asyncio.to_thread(load_cli.run, args, load_config(args.config))
        await server.stop(timeout=2)
        return rc
    rc = asyncio.run(scenario())
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["requests"] == 50 and r["answers"] == 50 and r["unanswered"] == 0
    assert r["options"]["host"] == "127.0.0.1" and r["options"]["port"] != 3868


def test_echo_server_answers_count_as_2001():
    """tools/echo_server.py (the baseline of tools/bench), 2 processes sharing a port:
    the load generator gets its CEA and counts every answer as 2001, in both modes."""
    for answer in ("echo", "minimal"):
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "echo_server.py"),
                                 "--listen", "127.0.0.1:0", "--processes", "2", "--answer", answer],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("echo_server listening on 127.0.0.1:"), proc.stderr.read()
            port = int(line.split()[3].rsplit(":", 1)[1])
            r = asyncio.run(run_load(small(port, requests=300, connections=4, event_ratio=0.2, seed=3)))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        check_counts(r, 300)
        assert r["result_codes"] == {2001: 300} and r["mscc_result_codes"] == {}
        assert {c["cea_result_code"] for c in r["connections"]} == {2001}
        assert {c["peer_origin_host"] for c in r["connections"]} == {"echo.localdomain"}
        assert r["dpa_received"] == 4


def test_bench_echo_target_json():
    """tools/bench with the echo target only: one row, every answer 2001."""
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "bench"), "--targets", "echo-1",
                        "--runs", "1", "--duration", "1", "--warmup", "0.2", "--sessions", "20",
                        "--connections", "2", "--quiet", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    [row] = out["rows"]
    assert row["target"] == "echo-1" and row["all_2001"] and row["ccr_per_s"] > 0
    assert row["spread"] == ["2"] and out["checks"] == []


def test_bench_charging_runs_or_says_what_is_missing():
    """With the store and `ocs accounts generate`, a tiny benchmark runs; without,
    the tool says which piece is missing."""
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "bench_charging.py"),
                        "--accounts", "200", "--runs", "1", "--duration", "0.5", "--sessions", "20",
                        "--connections", "2", "--quiet", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    if "is not there yet" in r.stderr:          # an ocs without the store or the generator
        assert r.returncode == 2 and ("[store]" in r.stderr or "ocs accounts generate" in r.stderr)
    else:
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)["durability"]
        assert [row["durability"] for row in rows] == ["fsync", "os"]
        for row in rows:
            assert row["sessions"] == 20 and row["ccr_per_s"] > 0 and row["unanswered"] == 0
            assert set(map(int, row["result_codes"])) <= KNOWN_CODES
