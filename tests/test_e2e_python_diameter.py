"""End to end on 127.0.0.1: the node runs in-process (its asyncio loop on a
background thread, started the way `ocs.service.serve` starts it), and the peer
is the independent `python-diameter` stack, so neither side shares a codec.

- The capabilities / watchdog / unknown-command / disconnect exchange and the
  CCR use python-diameter's `diameter.node.Node` (its own TCP connection,
  CER, DWR, DPR and request routing).
- The tests that need to send what a conforming Node never sends (no CER
  first, a CER without a common application, broken headers, retransmissions
  with a chosen End-to-End id, byte-exact comparison of answers) use
  python-diameter's `diameter.message` classes over a plain socket: `Node`
  always opens with its own CER, parses every answer into objects (so the
  wire bytes are gone) and cannot write a malformed header.

Every wait is bounded by a timeout of a few seconds; every test stops its
server and closes its sockets (and the python-diameter Node) on the way out.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import socket
import struct
import threading
import time
from contextlib import contextmanager

import pytest
from diameter.message import Message as PdMessage
from diameter.message import MessageHeader
from diameter.message.avp import Avp
from diameter.message.commands import (CapabilitiesExchangeAnswer, CapabilitiesExchangeRequest,
                                       CreditControlRequest, DeviceWatchdogAnswer,
                                       DeviceWatchdogRequest, DisconnectPeerAnswer,
                                       DisconnectPeerRequest)
from diameter.node import Node

from frame_socket import FrameSocket, python_diameter_cer, python_diameter_node
from ocs.config import Config, DiameterConfig, ListenConfig, NodeConfig
from ocs.net.server import DiameterServer
from ocs.service import node_context

SERVER_HOST = "ocs.example.net"
REALM = "example.net"
CLIENT_HOST = "pgw.example.net"
LOOPBACK = "127.0.0.1"

CREDIT_CONTROL = 4
VENDOR_3GPP = 10415
UNKNOWN_COMMAND = 8388620          # no handler in the node (3GPP SLg PLR elsewhere)

# AVP codes (RFC 6733 / RFC 4006)
SESSION_ID, ORIGIN_HOST, ORIGIN_REALM, DESTINATION_REALM = 263, 264, 296, 283
RESULT_CODE, AUTH_APPLICATION_ID, SUPPORTED_VENDOR_ID = 268, 258, 265
CC_REQUEST_NUMBER, CC_REQUEST_TYPE, SERVICE_CONTEXT_ID = 415, 416, 461
GRANTED_SERVICE_UNIT, MSCC, VALIDITY_TIME = 431, 456, 448

FLAG_R, FLAG_P, FLAG_E, FLAG_T = 0x80, 0x40, 0x20, 0x10

TIMEOUT = 5.0            # any single wait in these tests
DPA_TIMEOUT = 2.0        # node: how long it waits for the peer to close after its DPA


# ---------------------------------------------------------------- the node
class RunningNode:
    """The ocs node: NodeContext + DiameterServer on port 0, loop on a thread."""

    def __init__(self, dictionary, register=None, **diameter):
        diameter.setdefault("cer_timeout", 4.0)
        diameter.setdefault("dpa_timeout", DPA_TIMEOUT)
        self.config = Config(node=NodeConfig(origin_host=SERVER_HOST, origin_realm=REALM),
                             listen=ListenConfig(LOOPBACK, 0),
                             diameter=DiameterConfig(**diameter))
        self.context = node_context(self.config, dictionary)
        if register is not None:
            register(self.context.registry)
        self.server = DiameterServer(self.context)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ocs-node", daemon=True)

    def start(self) -> "RunningNode":
        self.thread.start()
        self.call(self.server.start(self.config.listen.address, self.config.listen.port))
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro, timeout: float = TIMEOUT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connection_count(self) -> int:
        async def count():
            return len(self.server.connections)
        return self.call(count())

    def wait_connections(self, n: int, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.connection_count() != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"node has {self.connection_count()} connections, expected {n}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            if self.thread.is_alive():
                self.call(self.server.stop(timeout=1.0), timeout=TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            if not self.thread.is_alive():
                self.loop.close()


@contextmanager
def running_node(dictionary, register=None, **diameter):
    node = RunningNode(dictionary, register, **diameter)
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.fixture
def ocs_node(dictionary):
    with running_node(dictionary) as node:
        yield node


# ------------------------------------------- python-diameter Node as a peer
class RecordingNode(Node):
    """python-diameter Node that also hands every CEA/DWA/DPA to the test."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.received: queue.Queue = queue.Queue()

    def receive_cea(self, conn, message):
        self.received.put(message)
        super().receive_cea(conn, message)

    def receive_dwa(self, conn, message):
        self.received.put(message)
        super().receive_dwa(conn, message)

    def receive_dpa(self, conn, message):
        self.received.put(message)
        super().receive_dpa(conn, message)


class PythonDiameterPeer:
    """A client `diameter.node.Node` with one peer (the ocs node) and app 4."""

    def __init__(self, port: int):
        self.node, self.peer, self.app = python_diameter_node(RecordingNode, CLIENT_HOST, REALM,
                                                              SERVER_HOST, port)
        self._started = False

    def expect(self, kind, timeout: float = TIMEOUT):
        try:
            msg = self.node.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {kind.__name__} within {timeout} s") from None
        assert isinstance(msg, kind), f"expected {kind.__name__}, got {msg}"
        return msg

    def open(self) -> CapabilitiesExchangeAnswer:
        self._started = True
        self.node.start()                      # connects and sends CER (persistent peer)
        cea = self.expect(CapabilitiesExchangeAnswer)
        self.app.wait_for_ready(TIMEOUT)
        self.peer.persistent = False           # no reconnect after our DPR
        return cea

    def watchdog(self) -> DeviceWatchdogAnswer:
        self.node.send_dwr(self.peer.connection)
        return self.expect(DeviceWatchdogAnswer)

    def request(self, msg, timeout: float = TIMEOUT):
        return self.app.send_request(msg, timeout=timeout)

    def disconnect(self) -> DisconnectPeerAnswer:
        self.node.send_dpr(self.peer.connection)
        dpa = self.expect(DisconnectPeerAnswer)
        deadline = time.monotonic() + TIMEOUT
        while self.node.connections:           # python-diameter closes once the DPA is in
            assert time.monotonic() < deadline, "python-diameter kept the connection after DPA"
            time.sleep(0.05)
        return dpa

    def close(self) -> None:
        if self._started:
            self._started = False
            self.node.stop(wait_timeout=2)


@contextmanager
def python_diameter_peer(port: int):
    peer = PythonDiameterPeer(port)
    try:
        yield peer
    finally:
        peer.close()


def unknown_command_request(command_code: int = UNKNOWN_COMMAND,
                            application_id: int = CREDIT_CONTROL) -> PdMessage:
    """A request for a command the node has no handler for (plain python-diameter Message)."""
    msg = PdMessage(MessageHeader(command_flags=FLAG_R | FLAG_P, command_code=command_code,
                                  application_id=application_id))
    msg.append_avp(Avp.new(SESSION_ID, value=f"{CLIENT_HOST};unknown;1"))
    msg.append_avp(Avp.new(ORIGIN_HOST, value=CLIENT_HOST.encode()))
    msg.append_avp(Avp.new(ORIGIN_REALM, value=REALM.encode()))
    msg.append_avp(Avp.new(DESTINATION_REALM, value=REALM.encode()))
    return msg


def avp_values(msg: PdMessage, code: int) -> list:
    return [a.value for a in msg.find_avps((code, 0))]


def run_python_diameter_exchange(port: int) -> dict:
    """CER/CEA, DWR/DWA, unknown command, DPR/DPA with python-diameter's Node.
    Returns the answers (shared with test_tshark.py, which captures it)."""
    with python_diameter_peer(port) as pd:
        cea = pd.open()
        dwa = pd.watchdog()
        unknown = pd.request(unknown_command_request())
        dpa = pd.disconnect()
    return {"cea": cea, "dwa": dwa, "unknown": unknown, "dpa": dpa}


def check_exchange(answers: dict) -> None:
    cea, dwa, unknown, dpa = answers["cea"], answers["dwa"], answers["unknown"], answers["dpa"]
    assert cea.result_code == 2001
    assert not cea.header.is_error
    assert cea.origin_host == SERVER_HOST.encode() and cea.origin_realm == REALM.encode()
    assert CREDIT_CONTROL in cea.auth_application_id
    assert VENDOR_3GPP in cea.supported_vendor_id

    assert dwa.result_code == 2001 and not dwa.header.is_error

    assert unknown.header.command_code == UNKNOWN_COMMAND
    assert not unknown.header.is_request
    assert unknown.header.is_error, "3001 is a protocol error: the answer must carry the E bit"
    assert unknown.header.application_id == CREDIT_CONTROL
    assert avp_values(unknown, RESULT_CODE) == [3001]
    assert avp_values(unknown, ORIGIN_HOST) == [SERVER_HOST.encode()]

    assert dpa.result_code == 2001 and not dpa.header.is_error


# ------------------------------------------- python-diameter Node exchanges
def test_python_diameter_node_exchange(ocs_node):
    answers = run_python_diameter_exchange(ocs_node.port)
    check_exchange(answers)
    # python-diameter closed after the DPA; the node's side is gone too
    ocs_node.wait_connections(0)


def test_ccr_is_answered_3001_and_never_granted(ocs_node):
    with python_diameter_peer(ocs_node.port) as pd:
        assert pd.open().result_code == 2001
        ccr = CreditControlRequest()
        ccr.session_id = pd.node.session_generator.next_id()
        ccr.origin_host = CLIENT_HOST.encode()
        ccr.origin_realm = REALM.encode()
        ccr.destination_realm = REALM.encode()
        ccr.auth_application_id = CREDIT_CONTROL
        ccr.service_context_id = "32251@3gpp.org"
        ccr.cc_request_type = 1                     # INITIAL_REQUEST
        ccr.cc_request_number = 0
        ccr.add_subscription_id(0, "491710000001")  # END_USER_E164
        ccr.multiple_services_indicator = 1
        ccr.add_multiple_services_credit_control(requested_service_unit=None, rating_group=100)
        cca = pd.request(ccr)
        assert cca.header.command_code == 272 and not cca.header.is_request
        assert cca.header.application_id == CREDIT_CONTROL
        assert cca.header.is_error
        assert avp_values(cca, RESULT_CODE) == [3001]
        assert avp_values(cca, SESSION_ID) == [ccr.session_id]
        # no grant of any kind
        assert not cca.find_avps((MSCC, 0))
        assert not cca.find_avps((MSCC, 0), (GRANTED_SERVICE_UNIT, 0))
        assert not cca.find_avps((GRANTED_SERVICE_UNIT, 0))
        pd.disconnect()


# --------------------------------------------------------- plain sockets
_ids = itertools.count(0x1000)


def header(length: int, flags: int = FLAG_R, code: int = 280, app: int = 0,
           hbh: int = 1, e2e: int = 1, version: int = 1) -> bytes:
    return struct.pack("!IIIII", (version << 24) | length, (flags << 24) | code, app, hbh, e2e)


class RawPeer(FrameSocket):
    """One TCP connection speaking python-diameter messages (or raw bytes)."""

    def __init__(self, port: int):
        super().__init__(LOOPBACK, port, TIMEOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.sock.close()

    def recv(self):
        return PdMessage.from_bytes(self.recv_frame())

    def wait_closed(self, timeout: float = TIMEOUT) -> bytes:
        """Everything the node sends until it closes; fails if it does not close in time."""
        got = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout} s (got {got.hex()})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return got
            except socket.timeout:
                continue
            if not chunk:
                return got
            got += chunk

    def exchange(self, msg):
        self.send(msg)
        return self.recv()

    def open(self, **cer_fields) -> CapabilitiesExchangeAnswer:
        cea = self.exchange(cer(**cer_fields))
        assert isinstance(cea, CapabilitiesExchangeAnswer) and cea.result_code == 2001, cea
        return cea


def _ids_on(msg):
    msg.header.hop_by_hop_identifier = next(_ids)
    msg.header.end_to_end_identifier = next(_ids)
    return msg


def cer(origin_host: str = CLIENT_HOST, auth=(CREDIT_CONTROL,), acct=()) -> CapabilitiesExchangeRequest:
    return python_diameter_cer(origin_host, REALM, next(_ids), next(_ids), auth, acct)


def dwr() -> DeviceWatchdogRequest:
    m = _ids_on(DeviceWatchdogRequest())
    m.origin_host = CLIENT_HOST.encode()
    m.origin_realm = REALM.encode()
    return m


def dpr() -> DisconnectPeerRequest:
    m = _ids_on(DisconnectPeerRequest())
    m.origin_host = CLIENT_HOST.encode()
    m.origin_realm = REALM.encode()
    m.disconnect_cause = 0
    return m


def ccr(session: str, number: int = 0) -> CreditControlRequest:
    m = _ids_on(CreditControlRequest())
    m.header.application_id = CREDIT_CONTROL     # python-diameter leaves it 0 outside a Node
    m.session_id = session
    m.origin_host = CLIENT_HOST.encode()
    m.origin_realm = REALM.encode()
    m.destination_realm = REALM.encode()
    m.auth_application_id = CREDIT_CONTROL
    m.service_context_id = "32251@3gpp.org"
    m.cc_request_type = 1 if number == 0 else 2
    m.cc_request_number = number
    return m


def assert_dwa_ok(raw: RawPeer) -> None:
    dwa = raw.exchange(dwr())
    assert isinstance(dwa, DeviceWatchdogAnswer) and dwa.result_code == 2001


def test_dpr_over_socket_node_closes_after_dpa(ocs_node):
    """The receiver of the DPA (us) should close; if it does not, the node does
    after its DPA timeout."""
    with RawPeer(ocs_node.port) as raw:
        raw.open()
        req = dpr()
        dpa = raw.exchange(req)
        assert isinstance(dpa, DisconnectPeerAnswer) and dpa.result_code == 2001
        assert dpa.header.hop_by_hop_identifier == req.header.hop_by_hop_identifier
        assert raw.wait_closed(DPA_TIMEOUT + 3) == b""
    ocs_node.wait_connections(0)


@pytest.mark.parametrize("first", ["DWR", "unknown-command", "CEA"])
def test_first_message_not_cer_closes_connection(ocs_node, first):
    with RawPeer(ocs_node.port) as raw:
        if first == "DWR":
            msg = dwr()
        elif first == "unknown-command":
            msg = _ids_on(unknown_command_request())
        else:   # an answer that looks like a CEA
            msg = _ids_on(CapabilitiesExchangeAnswer())
            msg.result_code = 2001
            msg.origin_host = CLIENT_HOST.encode()
            msg.origin_realm = REALM.encode()
            msg.host_ip_address = [LOOPBACK]
            msg.vendor_id = 0
            msg.product_name = "python-diameter"
        raw.send(msg)
        assert raw.wait_closed() == b"", "the node must close without answering"
    ocs_node.wait_connections(0)


@pytest.mark.parametrize("auth,acct", [((16777251,), ()), ((), (3,)), ((), ())],
                         ids=["s6a-only", "base-accounting-only", "none"])
def test_cer_without_common_application_5010_and_close(ocs_node, auth, acct):
    with RawPeer(ocs_node.port) as raw:
        req = cer(auth=auth, acct=acct)
        raw.send(req)
        cea = raw.recv()
        assert isinstance(cea, CapabilitiesExchangeAnswer)
        assert cea.result_code == 5010
        assert not cea.header.is_error, "5010 is a permanent failure, not a protocol error"
        assert cea.header.hop_by_hop_identifier == req.header.hop_by_hop_identifier
        assert cea.header.end_to_end_identifier == req.header.end_to_end_identifier
        assert CREDIT_CONTROL in cea.auth_application_id     # says what it does support
        assert raw.wait_closed() == b""
    ocs_node.wait_connections(0)


@pytest.mark.parametrize("length", [0, 8, 19, 2**24 - 1, 2**24 - 4, 20 + 2],
                         ids=lambda n: f"len{n}")
@pytest.mark.parametrize("when", ["before-CER", "after-CER"])
def test_bad_header_length_closes_only_that_connection(ocs_node, length, when):
    with RawPeer(ocs_node.port) as good:
        good.open(origin_host="good.example.net")
        with RawPeer(ocs_node.port) as bad:
            if when == "after-CER":
                bad.open(origin_host="bad.example.net")
            ocs_node.wait_connections(2)
            bad.send(header(length, hbh=0xBAD, e2e=0xBAD))
            leftover = bad.wait_closed()
            if when == "before-CER":
                assert leftover == b"", "before the CER, anything but a CER just closes"
            else:
                # on an open connection the broken request is answered 5015, then closed
                ans = PdMessage.from_bytes(leftover)
                assert not ans.header.is_request
                assert ans.header.hop_by_hop_identifier == 0xBAD
                assert avp_values(ans, RESULT_CODE) == [5015]
        ocs_node.wait_connections(1)
        # the good connection is untouched
        assert_dwa_ok(good)
        assert_dwa_ok(good)
        good.exchange(dpr())


@pytest.mark.parametrize("app", [CREDIT_CONTROL, 0], ids=["app4", "app0"])
def test_unknown_command_over_socket_is_3001(ocs_node, app):
    with RawPeer(ocs_node.port) as raw:
        raw.open()
        req = _ids_on(unknown_command_request(UNKNOWN_COMMAND, app))
        ans = raw.exchange(req)
        assert ans.header.command_code == UNKNOWN_COMMAND
        assert ans.header.hop_by_hop_identifier == req.header.hop_by_hop_identifier
        assert ans.header.end_to_end_identifier == req.header.end_to_end_identifier
        assert ans.header.is_error and not ans.header.is_request
        assert avp_values(ans, RESULT_CODE) == [3001]
        assert_dwa_ok(raw)                          # the connection stays up
        raw.exchange(dpr())


def _retransmission(frame: bytes, hbh: int) -> bytes:
    """The same request with the T flag set and a new Hop-by-Hop id."""
    return frame[:4] + bytes([frame[4] | FLAG_T]) + frame[5:12] + struct.pack("!I", hbh) + frame[16:]


def _same_but_hop_by_hop(first: bytes, second: bytes, hbh: int) -> None:
    assert second[12:16] == struct.pack("!I", hbh), "the duplicate's answer has its own Hop-by-Hop id"
    assert second[:12] == first[:12] and second[16:] == first[16:], (
        f"answers differ beyond Hop-by-Hop:\n{first.hex()}\n{second.hex()}")


def test_duplicate_request_gets_identical_answer_no_handler(ocs_node):
    """No credit-control handler yet: the 3001 answer repeats byte for byte."""
    with RawPeer(ocs_node.port) as raw:
        raw.open()
        original = raw.send(ccr(f"{CLIENT_HOST};dup;1"))
        first = raw.recv_frame()
        hbh = next(_ids)
        raw.send(_retransmission(original, hbh))
        second = raw.recv_frame()
        assert PdMessage.from_bytes(first).header.is_error
        assert avp_values(PdMessage.from_bytes(first), RESULT_CODE) == [3001]
        _same_but_hop_by_hop(first, second, hbh)
        raw.exchange(dpr())


def test_duplicate_request_served_from_cache_once(dictionary):
    """With a stand-in handler for CCR (registered through the public registry,
    as credit control will be), a retransmission with the same Origin-Host and
    End-to-End id gets the cached answer, byte-identical except Hop-by-Hop, on
    the same connection and, after that one closed, on a new one (a failover);
    the handler runs once."""
    calls = []

    async def handler(msg, ctx):
        calls.append(msg.end_to_end)
        ans = msg.answer(2001)
        ans.add("Origin-Host", SERVER_HOST).add("Origin-Realm", REALM)
        ans.add("Auth-Application-Id", CREDIT_CONTROL)
        ans.add("CC-Request-Type", msg.get("CC-Request-Type"))
        ans.add("CC-Request-Number", msg.get("CC-Request-Number"))
        ans.add("Validity-Time", 1000 + len(calls))      # differs on every run of the handler
        return ans

    with running_node(dictionary, register=lambda r: r.register(CREDIT_CONTROL, 272, handler)) as node:
        with RawPeer(node.port) as raw:
            raw.open()
            original = raw.send(ccr(f"{CLIENT_HOST};dup;2"))
            first = raw.recv_frame()
            answer = PdMessage.from_bytes(first)
            assert avp_values(answer, RESULT_CODE) == [2001] and not answer.header.is_error
            assert avp_values(answer, VALIDITY_TIME) == [1001]

            hbh = next(_ids)
            raw.send(_retransmission(original, hbh))
            _same_but_hop_by_hop(first, raw.recv_frame(), hbh)
            raw.exchange(dpr())

        with RawPeer(node.port) as other:              # after a failover: a new connection
            other.open()
            hbh = next(_ids)
            other.send(_retransmission(original, hbh))
            _same_but_hop_by_hop(first, other.recv_frame(), hbh)

            # a new End-to-End id is a new request
            fresh = other.exchange(ccr(f"{CLIENT_HOST};dup;2", number=1))
            assert avp_values(fresh, VALIDITY_TIME) == [1002]
            assert len(calls) == 2
            other.exchange(dpr())
