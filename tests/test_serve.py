"""`ocs serve` as an operator runs it: a subprocess on 127.0.0.1, a config
file with flags on top, SIGTERM sending DPR to connected peers; and the
in-process server with several peers at once."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ocs.config import Config, ConfigError, ListenConfig, from_dict, load_config
from ocs.diameter.capabilities import LocalPeer
from ocs.diameter.dictload import load_directory
from ocs.net.client import connect
from ocs.net.connection import NodeContext
from ocs.net.server import DiameterServer
from ocs.service import node_context

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_node(host="pgw.example.net"):
    return NodeContext(LocalPeer(host, "example.net"), load_directory())


async def connect_when_ready(port, node, proc, timeout=20.0):
    """Connect to a node subprocess that is still starting (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect("127.0.0.1", port, node)
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            await asyncio.sleep(0.1)


def test_config_file_and_errors(tmp_path):
    f = tmp_path / "ocs.toml"
    f.write_text('[node]\norigin_host = "ocs1.example.net"\nserved_realms = ["a.net", "b.net"]\n'
                 '[diameter]\ntw = 12\nallowed_peers = ["pgw.example.net"]\n')
    c = load_config(str(f))
    assert c.node.origin_host == "ocs1.example.net" and c.node.served_realms == ("a.net", "b.net")
    assert c.diameter.tw == 12.0 and c.diameter.allowed_peers == ("pgw.example.net",)
    assert c.listen.port == 3868
    with pytest.raises(ConfigError, match="unknown setting"):
        from_dict({"node": {"origin_hots": "x"}})
    with pytest.raises(ConfigError, match="unknown section"):
        from_dict({"nodes": {}})
    for section, values, what in [
        ("listen", {"port": "3868"}, "port number"),
        ("listen", {"port": 70000}, "port number"),
        ("diameter", {"tw": 1}, "at least 6"),
        ("diameter", {"allowed_peers": "pgw.example.net"}, "list of Origin-Host"),
        ("diameter", {"dictionaries": 5}, "folder path"),
        ("diameter", {"max_message_length": 19}, "20..16777212"),
        ("node", {"host_ip_addresses": ["bad"]}, "IP address"),
        ("log", {"level": "verbose"}, "debug, info"),
    ]:
        with pytest.raises(ConfigError, match=what):
            from_dict({section: values})


def test_example_config_is_valid_and_complete():
    """Every setting appears in ocs.example.toml with its default: set to it, or
    (for settings whose default is 'absent') shown commented out."""
    import attrs
    import tomllib
    path = os.path.join(REPO, "ocs.example.toml")
    text = open(path).read()
    data = tomllib.loads(text)
    assert load_config(path) == load_config(None)          # the example is the defaults
    for section in attrs.fields(Config):
        for field in attrs.fields(type(section.default)):
            if field.default is None:
                assert f"# {field.name} =" in text and field.name not in data[section.name]
            else:
                value = data[section.name][field.name]
                value = tuple(value) if isinstance(value, list) else value
                assert value == field.default, f"{section.name}.{field.name}"


def test_serve_subprocess_sigterm_sends_dpr(tmp_path):
    port = free_port()
    cfg = tmp_path / "ocs.toml"
    cfg.write_text('[node]\norigin_host = "ocs.test"\norigin_realm = "example.net"\n'
                   '[listen]\naddress = "127.0.0.1"\nport = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "ocs", "serve", "--config", str(cfg),
                             "--listen", f"127.0.0.1:{port}", "--store", str(tmp_path / "store"),
                             "--metrics", "127.0.0.1:0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        async def scenario():
            client = await connect_when_ready(port, client_node(), proc)
            assert client.peer.origin_host == "ocs.test"        # file setting
            conn = client.conn
            proc.send_signal(signal.SIGTERM)
            reason = await asyncio.wait_for(asyncio.shield(conn.closed), 10)
            return reason, conn.peer.state.value, conn.disconnect_cause
        reason, state, cause = asyncio.run(scenario())
        assert proc.wait(timeout=15) == 0
        out = proc.stdout.read()
        assert "sending DPR to 1 peer" in out
        assert cause == 0                        # the client received DPR, REBOOTING
        assert state == "Closed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_broken_dictionary(tmp_path):
    (tmp_path / "x.dict").write_text("@name x\n@avp_types\nA 1 Bogus M\n")
    r = subprocess.run([sys.executable, "-m", "ocs", "serve", "--dictionaries", str(tmp_path),
                        "--listen", "127.0.0.1:0", "--store", str(tmp_path / "store")], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "x.dict:3" in r.stderr


def test_many_peers_and_graceful_stop():
    async def scenario():
        cfg = Config(listen=ListenConfig("127.0.0.1", 0))
        server = DiameterServer(node_context(cfg))
        await server.start("127.0.0.1", 0)
        clients = await asyncio.gather(*(connect("127.0.0.1", server.port, client_node(f"gw{i}.example.net"))
                                         for i in range(20)))
        assert len(server.connections) == 20
        # each can talk; an unhandled CCR is refused with 3001, never granted
        answers = await asyncio.gather(*(c.request(c.build("Credit-Control-Request", [
            ("Session-Id", f"gw{i};1"), ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
            ("Service-Context-Id", "32251@3gpp.org"), ("CC-Request-Type", 1), ("CC-Request-Number", 0)]))
            for i, c in enumerate(clients)))
        assert {(a.get("Result-Code"), a.is_error) for a in answers} == {(3001, True)}
        await server.stop(timeout=5)
        states = {c.conn.peer.state.value for c in clients}
        return states, len(server.connections)
    states, left = asyncio.run(scenario())
    assert states == {"Closed"} and left == 0


def test_json_logs_name_peer_and_connection(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ocs", "serve", "--listen", f"127.0.0.1:{port}",
                             "--log-format", "json", "--store", str(tmp_path / "store"),
                             "--metrics", "127.0.0.1:0"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        async def scenario():
            client = await connect_when_ready(port, client_node("json.example.net"), proc)
            await client.close()
        asyncio.run(scenario())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        import json
        records = [json.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]
        opened = [r for r in records if "open on connection" in r["msg"]]
        assert opened and opened[0]["peer"] == "json.example.net" and opened[0]["connection"] >= 1
        assert {r["level"] for r in records} <= {"debug", "info", "warning", "error"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_one_connection_per_peer_unless_it_restarted():
    """R-Open + R-Conn-CER -> R-Reject; a higher Origin-State-Id replaces the old one."""
    async def scenario():
        server = DiameterServer(node_context(Config()))
        await server.start("127.0.0.1", 0)

        def node(state):
            return NodeContext(LocalPeer("pgw.example.net", "example.net", origin_state_id=state),
                               load_directory())
        first = await connect("127.0.0.1", server.port, node(100))
        with pytest.raises(ConnectionError, match="closed|lost"):
            await connect("127.0.0.1", server.port, node(100))          # same peer, not restarted
        assert server.node.peers.get("PGW.example.net") is not None
        assert first.conn.peer.state.value == "I-Open"
        restarted = await connect("127.0.0.1", server.port, node(101))  # the peer restarted
        await asyncio.wait_for(asyncio.shield(first.conn.closed), 5)    # the leftover is dropped
        assert len(server.node.peers) == 1 and restarted.conn.peer.state.value == "I-Open"
        await server.stop(timeout=5)
    asyncio.run(scenario())


def _ccr(client, sid="gw;1"):
    return client.build("Credit-Control-Request", [
        ("Session-Id", sid), ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
        ("Service-Context-Id", "32251@3gpp.org"), ("CC-Request-Type", 1), ("CC-Request-Number", 0)])


def test_handler_failure_is_answered_5012_and_hung_requests_fail_on_close():
    async def scenario():
        node = node_context(Config())
        release = asyncio.Event()

        async def handler(msg, ctx):
            if msg.get("Session-Id") == "boom":
                raise RuntimeError("handler bug")
            await release.wait()                    # never answers until released
            raise AssertionError("not reached")
        node.registry.register(4, 272, handler)
        server = DiameterServer(node)
        await server.start("127.0.0.1", 0)
        client = await connect("127.0.0.1", server.port, client_node())
        ans = await client.request(_ccr(client, "boom"))
        assert (ans.get("Result-Code"), ans.is_error, ans.get("CC-Request-Number")) == (5012, False, 0)
        hung = asyncio.ensure_future(client.request(_ccr(client, "hang"), timeout=10))
        await asyncio.sleep(0.1)
        [conn] = server.connections
        conn.transport.abort()                       # the link drops with a request in flight
        with pytest.raises(ConnectionError):
            await hung
        with pytest.raises(asyncio.TimeoutError):    # and a request that times out is forgotten
            client2 = await connect("127.0.0.1", server.port, client_node("gw2.example.net"))
            await client2.request(_ccr(client2, "hang2"), timeout=0.2)
        assert not client2.conn.peer._pending
        release.set()
        await server.stop(timeout=2)
    asyncio.run(scenario())


def test_stop_is_bounded_when_a_peer_ignores_dpr():
    import socket as socketlib

    async def scenario():
        node = node_context(Config())
        node.dpa_timeout = 0.5
        server = DiameterServer(node)
        await server.start("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        sock = socketlib.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        from wire_samples import sample
        await loop.sock_sendall(sock, sample("CER"))
        await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)        # the CEA
        # DPR, never answered: stop() returns after the 0.5 s DPA timeout (wait_for
        # only guards against a hang; no speed is asserted)
        await asyncio.wait_for(server.stop(), 10)
        dpr = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        sock.close()
        return dpr
    dpr = asyncio.run(scenario())
    assert dpr[5:8] == (282).to_bytes(3, "big") and dpr[4] & 0x80      # it was a DPR
