"""A blocking TCP connection to the node that sends bytes (or python-diameter
messages) and reads whole Diameter frames: the base of the raw-socket peers
of the end-to-end tests."""

import socket


class FrameSocket:
    def __init__(self, host: str, port: int, timeout: float):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)

    def send(self, msg) -> bytes:
        data = bytes(msg if isinstance(msg, (bytes, bytearray)) else msg.as_bytes())
        self.sock.sendall(data)
        return data

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError(f"the node closed after {len(out)} of {n} octets")
            out += chunk
        return out

    def recv_frame(self) -> bytes:
        head = self._exactly(20)
        length = int.from_bytes(head[1:4], "big")
        assert head[0] == 1 and length >= 20, f"bad header from the node: {head.hex()}"
        return head + self._exactly(length - 20)


def python_diameter_node(node_class, origin_host: str, realm: str, server_host: str, port: int):
    """A python-diameter client `Node` (of `node_class`) with one peer, the ocs
    node on 127.0.0.1:port, and Diameter Credit-Control (application 4) on it.
    Returns (node, peer, application); nothing is started."""
    from diameter.node.application import SimpleThreadingApplication
    node = node_class(origin_host, realm, vendor_ids=[10415])
    node.wakeup_interval = 1          # its select() timeout: bounds every internal wait and stop()
    node.idle_timeout = 600           # no spontaneous DWR: the tests send the ones they want
    node.cea_timeout = 4
    peer = node.add_peer(f"aaa://{server_host}:{port};transport=tcp", realm, ["127.0.0.1"],
                         is_persistent=True)
    app = SimpleThreadingApplication(4, is_auth_application=True,
                                     request_handler=lambda app, msg: None)
    node.add_application(app, [peer])
    return node, peer, app


def python_diameter_cer(origin_host: str, realm: str, hop_by_hop: int, end_to_end: int,
                        auth=(4,), acct=()):
    """A python-diameter CER for 127.0.0.1 announcing 3GPP and the given applications."""
    from diameter.message.commands import CapabilitiesExchangeRequest
    m = CapabilitiesExchangeRequest()
    m.header.hop_by_hop_identifier = hop_by_hop
    m.header.end_to_end_identifier = end_to_end
    m.origin_host = origin_host.encode()
    m.origin_realm = realm.encode()
    m.host_ip_address = ["127.0.0.1"]
    m.vendor_id = 0
    m.product_name = "python-diameter"
    m.supported_vendor_id = [10415]
    m.auth_application_id = list(auth)
    m.acct_application_id = list(acct)
    return m
