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
