"""Helpers for tests/test_e2e_charging.py: an `ocs serve` subprocess on its own
LMDB store, provisioned with `ocs accounts load`, and two independent Diameter
peers built on `python-diameter` (never on the node's own codec):

- `NodePeer`: python-diameter's `diameter.node.Node` (its own TCP connection,
  CER/CEA, routing, answer matching);
- `RawPeer`: python-diameter message classes over a plain socket, for what a
  conforming Node never sends (a chosen End-to-End id, the T flag) and for
  byte-exact comparison of answers.

Everything waits with a bound of a few seconds; the node subprocess is always
stopped (SIGTERM, then SIGKILL if it does not exit).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

from diameter.message import Message as PdMessage
from diameter.message.avp.grouped import RequestedServiceUnit, UsedServiceUnit
from diameter.message.commands import (CapabilitiesExchangeAnswer, CapabilitiesExchangeRequest,
                                       CreditControlRequest, DisconnectPeerAnswer,
                                       DisconnectPeerRequest)
from diameter.node import Node
from frame_socket import FrameSocket, python_diameter_cer, python_diameter_node

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOPBACK = "127.0.0.1"
SERVER_HOST = "ocs.example.net"
REALM = "example.net"
PGW_A = "pgw-a.example.net"
PGW_B = "pgw-b.example.net"
CREDIT_CONTROL = 4
VENDOR_3GPP = 10415
DATA = "32251@3gpp.org"
SMS = "32274@3gpp.org"
RATING_GROUP = 10
TIMEOUT = 5.0

INITIAL, UPDATE, TERMINATION, EVENT = 1, 2, 3, 4
DIRECT_DEBITING, REFUND_ACCOUNT, CHECK_BALANCE, PRICE_ENQUIRY = 0, 1, 2, 3
E164 = 0
FLAG_T = 0x10

# AVP codes the tests look for in raw answers
RESULT_CODE, FAILED_AVP, SERVICE_CONTEXT_ID, SUBSCRIPTION_ID = 268, 279, 461, 443

# --------------------------------------------------------------- test data
# Exact, easy numbers (EUR cents): data costs 1 cent per 1000 octets (each
# report rounded up to a whole cent), an SMS 7 cents.
DATA_FILE = """
[[plans]]
id = "flat"
currency = "EUR"

  [[plans.tariffs]]
  context = "32251@3gpp.org"
  unit = "total_octets"
  price = 1
  per = 1000
  default_quota = 10000
  validity_time = 60
  quota_threshold = 1000
  quota_holding_time = 30
  final_unit = { action = "redirect", redirect_type = 2, redirect_address = "http://topup.example.net/" }

  [[plans.tariffs]]
  context = "32274@3gpp.org"
  unit = "service_specific_units"
  price = 7
  default_quota = 1

[[plans]]
id = "quick"
currency = "EUR"

  [[plans.tariffs]]
  context = "32251@3gpp.org"
  unit = "total_octets"
  price = 1
  per = 1000
  default_quota = 10000
  validity_time = 1

[[accounts]]
id = "alice"
plan = "flat"
identities = ["e164:491700000001"]
buckets = [ { id = "main", kind = "money", amount = 1000 } ]

[[accounts]]
id = "sam"
plan = "flat"
identities = ["e164:491700000002"]
buckets = [ { id = "main", kind = "money", amount = 100 } ]

[[accounts]]
id = "bob"
plan = "flat"
identities = ["e164:491700000003"]
buckets = [ { id = "main", kind = "money", amount = 15 } ]

[[accounts]]
id = "rita"
plan = "flat"
identities = ["e164:491700000004"]
buckets = [ { id = "main", kind = "money", amount = 1000 } ]

[[accounts]]
id = "fred"
plan = "flat"
identities = ["e164:491700000005"]
buckets = [ { id = "main", kind = "money", amount = 1000 } ]

[[accounts]]
id = "carol"
plan = "flat"
identities = ["e164:491700000006"]
buckets = [ { id = "main", kind = "money", amount = 1000 } ]

[[accounts]]
id = "erin"
plan = "quick"
identities = ["e164:491700000007"]
buckets = [ { id = "main", kind = "money", amount = 1000 } ]

[[accounts]]
id = "eve"
plan = "flat"
identities = ["e164:491700000008"]
buckets = [ { id = "main", kind = "money", amount = 100 } ]
"""

MSISDN = {"alice": "491700000001", "sam": "491700000002", "bob": "491700000003",
          "rita": "491700000004", "fred": "491700000005", "carol": "491700000006",
          "erin": "491700000007", "eve": "491700000008"}
UNKNOWN_MSISDN = "491709999999"

CONFIG_FILE = f"""
[node]
origin_host = "{SERVER_HOST}"
origin_realm = "{REALM}"

[diameter]
dpa_timeout = 1.0
cer_timeout = 5.0

[charging]
tcc_factor = 2
sweep_interval = 0.2

[log]
level = "info"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def run_cli(store: str, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocs", "accounts", "--store", store, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def cli_json(store: str, *args: str):
    done = run_cli(store, *args)
    assert done.returncode == 0, f"ocs accounts {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout)


# --------------------------------------------------------------- the node
class OcsProcess:
    """`ocs serve` on 127.0.0.1 with a store in `tmp_path`, provisioned by the CLI:
    one worker process unless `workers` says otherwise; /metrics on `metrics`
    (HOST:PORT, default off)."""

    def __init__(self, tmp_path, workers: int = 1, metrics: str = "off"):
        self.dir = tmp_path
        self.workers, self.metrics = workers, metrics
        self.store = str(tmp_path / "store")
        self.config = tmp_path / "ocs.toml"
        self.config.write_text(CONFIG_FILE)
        data = tmp_path / "data.toml"
        data.write_text(DATA_FILE)
        loaded = cli_json(self.store, "load", str(data))
        assert loaded == {"plans": 2, "accounts": len(MSISDN), "existing": 0}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = tmp_path / "ocs.log"

    def start(self) -> "OcsProcess":
        for _ in range(3):                     # another process may take the free port first
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ocs", "serve", "--listen", f"{LOOPBACK}:{self.port}",
                 "--store", self.store, "--config", str(self.config),
                 "--workers", str(self.workers), "--metrics", self.metrics],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if self._wait_listening():
                return self
        raise AssertionError(f"ocs serve did not start: {self.log()}")

    def _wait_listening(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            # probe with a plain connect: the node closes it after cer_timeout or at our close
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1.0):
                    return True
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait(TIMEOUT)
        raise AssertionError(f"ocs serve not listening after {timeout} s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM and wait (bounded); the exit status, or None if it had to be killed."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            return None

    # -- the operator's view (CLI, works while the node runs) --------------------
    def show(self, account: str) -> dict:
        return cli_json(self.store, "show", account)

    def events(self, account: str, limit: int = 100) -> list:
        return cli_json(self.store, "events", "--account", account, "--limit", str(limit))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(self.store, *args)

    # -- the store itself, read-only, once the node has stopped --------------------
    def snapshot(self) -> dict:
        assert self.proc is None or self.proc.poll() is not None, "stop the node first"
        from ocs.charging.records import decode_balance, decode_event, decode_session
        from ocs.store.lmdb import LmdbStore
        store = LmdbStore(self.store, readonly=True)
        try:
            with store.read() as txn:
                balances = {k.decode(): decode_balance(v) for k, v in txn.items("balances")}
                sessions = {k.decode(): decode_session(v) for k, v in txn.items("sessions")}
                events = [decode_event(v) for _, v in txn.items("outbox")]
        finally:
            store.close()
        return {"balances": balances, "sessions": sessions, "events": events}


def main_bucket(snapshot: dict, account: str):
    return snapshot["balances"][account].bucket("main")


def shown_main(shown: dict) -> dict:
    (main,) = [b for b in shown["buckets"] if b["id"] == "main"]
    return main


# --------------------------------------------------------------- requests
_ids = itertools.count(0x5000)


def next_id() -> int:
    return next(_ids)


def ccr(session: str, rtype: int, number: int, origin_host: str = PGW_A, *, context: str = DATA,
        msisdn: str | None = None, mscc: list | None = None, requested_action: int | None = None,
        rsu: RequestedServiceUnit | None = None, usu: UsedServiceUnit | None = None,
        ids: bool = True) -> CreditControlRequest:
    """A CCR (python-diameter). `mscc`: [(rating group, RSU or None, USU or None)]."""
    m = CreditControlRequest()
    m.header.application_id = CREDIT_CONTROL        # python-diameter leaves it 0 outside a Node
    if ids:
        m.header.hop_by_hop_identifier = next_id()
        m.header.end_to_end_identifier = next_id()
    m.session_id = session
    m.origin_host = origin_host.encode()
    m.origin_realm = REALM.encode()
    m.destination_realm = REALM.encode()
    m.auth_application_id = CREDIT_CONTROL
    m.service_context_id = context
    m.cc_request_type = rtype
    m.cc_request_number = number
    if msisdn is not None:
        m.add_subscription_id(E164, msisdn)
    if requested_action is not None:
        m.requested_action = requested_action
    if rsu is not None:
        m.requested_service_unit = rsu
    if usu is not None:
        m.used_service_unit = [usu]
    if mscc is not None:
        m.multiple_services_indicator = 1
        for rg, req, used in mscc:
            m.add_multiple_services_credit_control(requested_service_unit=req, used_service_unit=used,
                                                   rating_group=rg)
    return m


def rsu_octets(n: int | None = None) -> RequestedServiceUnit:
    """RSU with CC-Total-Octets n, or an empty RSU (the server picks the quota)."""
    return RequestedServiceUnit() if n is None else RequestedServiceUnit(cc_total_octets=n)


def usu_octets(n: int) -> UsedServiceUnit:
    return UsedServiceUnit(cc_total_octets=n)


# --------------------------------------------------------------- raw socket peer
def cer(origin_host: str) -> CapabilitiesExchangeRequest:
    return python_diameter_cer(origin_host, REALM, next_id(), next_id())


class RawPeer(FrameSocket):
    """One TCP connection carrying python-diameter messages; keeps answer bytes."""

    def __init__(self, port: int, origin_host: str = PGW_A):
        self.origin_host = origin_host
        super().__init__(LOOPBACK, port, TIMEOUT)

    def __enter__(self) -> "RawPeer":
        cea = self.exchange(cer(self.origin_host))[1]
        assert isinstance(cea, CapabilitiesExchangeAnswer) and cea.result_code == 2001, cea
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                req = DisconnectPeerRequest()
                req.header.hop_by_hop_identifier = next_id()
                req.header.end_to_end_identifier = next_id()
                req.origin_host = self.origin_host.encode()
                req.origin_realm = REALM.encode()
                req.disconnect_cause = 0
                dpa = self.exchange(req)[1]
                assert isinstance(dpa, DisconnectPeerAnswer)
        finally:
            self.sock.close()

    def exchange(self, msg) -> tuple[bytes, PdMessage]:
        """(answer bytes, parsed answer); the answer must match the request's ids."""
        sent = self.send(msg)
        frame = self.recv_frame()
        assert frame[12:20] == sent[12:20], "answer ids differ from the request's"
        return frame, PdMessage.from_bytes(frame)


def with_t_flag(frame: bytes, hop_by_hop: int) -> bytes:
    """The same request bytes, T flag set, a new Hop-by-Hop id (a retransmission)."""
    return frame[:4] + bytes([frame[4] | FLAG_T]) + frame[5:12] + struct.pack("!I", hop_by_hop) + frame[16:]


def without_ids(frame: bytes) -> bytes:
    return frame[:12] + frame[20:]


def avps(frame: bytes) -> list[tuple[int, int, int, bytes]]:
    """Top-level AVPs of a message: (code, flags, vendor, data), decoded by hand."""
    out, i = [], 20
    while i < len(frame):
        code, fl = struct.unpack_from("!IB", frame, i)
        length = int.from_bytes(frame[i + 5:i + 8], "big")
        head = 12 if fl & 0x80 else 8
        vendor = struct.unpack_from("!I", frame, i + 8)[0] if fl & 0x80 else 0
        out.append((code, fl, vendor, frame[i + head:i + length]))
        i += (length + 3) & ~3
    return out


# --------------------------------------------------------------- python-diameter Node peer
class NodePeer:
    """A python-diameter client Node with one peer (the ocs node) and application 4."""

    def __init__(self, port: int, origin_host: str = PGW_A):
        self.origin_host = origin_host
        self.node, self.peer, self.app = python_diameter_node(Node, origin_host, REALM, SERVER_HOST,
                                                              port)
        self._started = False

    def open(self) -> "NodePeer":
        self._started = True
        self.node.start()
        self.app.wait_for_ready(TIMEOUT)      # raises ApplicationError without a CEA in time
        self.peer.persistent = False           # no reconnect after our DPR
        return self

    def session_id(self) -> str:
        return self.node.session_generator.next_id()

    def request(self, msg: CreditControlRequest):
        return self.app.send_request(msg, timeout=TIMEOUT)

    def disconnect(self) -> None:
        """DPR; returns once python-diameter has closed the connection (bounded)."""
        conn = self.peer.connection
        if self._started and conn is not None:
            self.node.send_dpr(conn)
            deadline = time.monotonic() + TIMEOUT
            while self.node.connections and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not self.node.connections, "python-diameter kept its connection after DPR"

    def close(self) -> None:
        """Disconnect (if still connected) and stop the Node (its threads join, ~2-3 s)."""
        if not self._started:
            return
        try:
            self.disconnect()
        finally:
            self._started = False
            self.node.stop(wait_timeout=2)


def stop_all(peers) -> None:
    """Stop several python-diameter Nodes at once (each stop joins its threads, ~2-3 s)."""
    import threading
    threads = [threading.Thread(target=p.close, daemon=True) for p in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 5)
