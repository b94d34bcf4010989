"""Cut a TCP byte stream into Diameter messages (RFC 6733 §3).

A frame is trusted only after its header passes `check_header`: version 1,
a length that is a multiple of 4, at least the 20-octet header and at most the
configured maximum. Anything else raises `FramingError`: the stream can no longer
be resynchronised, so the connection is closed (RFC 6733 §2.1 "reset the
connection"). Nothing here waits for more than `max_length` octets, so a
header announcing 2^24-1 octets cannot make a connection hoard memory.
"""

from __future__ import annotations

from .errors import FramingError
from .message import HEADER_LENGTH

DEFAULT_MAX_LENGTH = 1 << 20


def check_header(header: bytes | bytearray, max_length: int = DEFAULT_MAX_LENGTH) -> int:
    """Validate the first 20 octets of a frame and return its length."""
    version = header[0]
    length = int.from_bytes(header[1:4], "big")
    if version != 1:
        raise FramingError(5011, f"version {version}", bytes(header[:HEADER_LENGTH]))
    if length < HEADER_LENGTH or length & 3:
        raise FramingError(5015, f"message length {length}", bytes(header[:HEADER_LENGTH]))
    if length > max_length:
        raise FramingError(5015, f"message length {length} above the limit {max_length}",
                           bytes(header[:HEADER_LENGTH]))
    return length


class Framer:
    """Accumulates received bytes and yields whole frames.

    After a FramingError the framer is poisoned: further data is ignored,
    because the byte stream has lost its boundaries.
    """

    __slots__ = ("_buf", "_max", "broken")

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH):
        self._buf = bytearray()
        self._max = max_length
        self.broken = False

    def feed(self, data: bytes) -> tuple[list[bytes], FramingError | None]:
        """Add data; return the complete frames and, if the stream broke after
        them, the FramingError (frames before the break are still valid)."""
        if self.broken:
            return [], None
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        n = len(buf)
        error = None
        while n - pos >= HEADER_LENGTH:
            try:
                length = check_header(buf[pos:pos + HEADER_LENGTH], self._max)
            except FramingError as e:
                self.broken = True
                error = e
                break
            if n - pos < length:
                break
            frames.append(bytes(buf[pos:pos + length]))
            pos += length
        if self.broken:
            buf.clear()
        else:
            del buf[:pos]
        return frames, error

    @property
    def buffered(self) -> int:
        return len(self._buf)
