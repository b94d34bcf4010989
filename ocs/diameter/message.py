"""Diameter messages (RFC 6733 §3): header, AVP list, answers.

```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|    Version    |                 Message Length                |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
| command flags |                  Command Code                 |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                         Application-ID                        |
|                      Hop-by-Hop Identifier                    |
|                      End-to-End Identifier                    |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|  AVPs ...
```
Flags: R 0x80 request, P 0x40 proxiable, E 0x20 error, T 0x10 retransmitted.

`decode_message` never raises for problems inside a well-framed message: it
returns the message and a list of `AvpError`. Framing problems raise
`FramingError` (see `framing.py`).
"""

from __future__ import annotations

import struct

from .avp import Avp, _by_name, build_children, make_avp
from .decoder import ANY, walk
from .dictionary import Dictionary
from .errors import AvpError, FramingError

HEADER = struct.Struct(">IIIII")
HEADER_LENGTH = 20
FLAG_R = 0x80
FLAG_P = 0x40
FLAG_E = 0x20
FLAG_T = 0x10
FLAGS_RESERVED = 0x0F


class Message:
    """A decoded or built Diameter message."""

    __slots__ = ("flags", "code", "application_id", "hop_by_hop", "end_to_end",
                 "avps", "dictionary", "raw")

    def __init__(self, dictionary: Dictionary, code: int, flags: int, application_id: int,
                 hop_by_hop: int = 0, end_to_end: int = 0, avps: list[Avp] | None = None):
        self.dictionary = dictionary
        self.code = code
        self.flags = flags
        self.application_id = application_id
        self.hop_by_hop = hop_by_hop
        self.end_to_end = end_to_end
        self.avps = avps if avps is not None else []
        self.raw: bytes | None = None       # the frame as received, for checks and logs

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_R)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_E)

    @property
    def is_retransmission(self) -> bool:
        return bool(self.flags & FLAG_T)

    @property
    def name(self) -> str:
        c = self.dictionary.command(self.code, self.is_request)
        if c is not None:
            return c.name
        return f"Unknown-Command({self.code}, {'request' if self.is_request else 'answer'})"

    def find(self, name: str) -> Avp | None:
        d = _by_name(self.dictionary, name)
        code, vendor = d.code, d.vendor
        for a in self.avps:
            if a.code == code and a.vendor == vendor:
                return a
        return None

    def find_all(self, name: str) -> list[Avp]:
        d = _by_name(self.dictionary, name)
        code, vendor = d.code, d.vendor
        return [a for a in self.avps if a.code == code and a.vendor == vendor]

    def get(self, name: str, default=None):
        a = self.find(name)
        if a is None:
            return default
        v = a._value
        return a.value if v is None else v

    def add(self, name: str, value) -> "Message":
        self.avps.append(make_avp(self.dictionary, name, value))
        return self

    def extend(self, items) -> "Message":
        """Add AVPs from (name, value) pairs or a dict (see avp.build_children)."""
        self.avps.extend(build_children(self.dictionary, items))
        return self

    def encode(self) -> bytes:
        body = b"".join([a.encode() for a in self.avps])
        length = HEADER_LENGTH + len(body)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} octets exceeds the 24-bit Message Length")
        return HEADER.pack(
            (1 << 24) | length, (self.flags << 24) | self.code,
            self.application_id, self.hop_by_hop, self.end_to_end,
        ) + body

    def answer(self, result_code: int | None = None, error: bool = False) -> "Message":
        """An answer skeleton per RFC 6733 §6.2: same code, application, ids and
        P bit; Session-Id copied first; Proxy-Info copied in order. The caller
        adds Origin-Host/Realm (the peer layer does this for protocol errors)."""
        flags = (self.flags & FLAG_P) | (FLAG_E if error else 0)
        ans = Message(self.dictionary, self.code, flags, self.application_id,
                      self.hop_by_hop, self.end_to_end)
        sid = self.dictionary.avps_by_name.get("Session-Id")
        if sid is not None:
            for a in self.avps:
                if a.code == sid.code and a.vendor == 0:
                    ans.avps.append(a)
                    break
        if result_code is not None:
            ans.add("Result-Code", result_code)
        proxy = self.dictionary.avps_by_name.get("Proxy-Info")
        if proxy is not None:
            ans.avps.extend(a for a in self.avps if a.code == proxy.code and a.vendor == 0)
        return ans

    def __repr__(self) -> str:
        kind = "R" if self.is_request else "A"
        return (f"Message({self.name} {kind} flags=0x{self.flags:02x} app={self.application_id} "
                f"hbh={self.hop_by_hop} e2e={self.end_to_end} avps={len(self.avps)})")


def request(dictionary: Dictionary, name: str, avps=(), hop_by_hop: int = 0,
            end_to_end: int = 0, application_id: int | None = None) -> Message:
    """Build a request by command name from the dictionary."""
    cmd = dictionary.commands_by_name[name]
    flags = FLAG_R | (FLAG_P if cmd.proxiable else 0)
    app = application_id if application_id is not None else (cmd.application_id or 0)
    return Message(dictionary, cmd.code, flags, app, hop_by_hop, end_to_end).extend(avps)


def parse_header(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(version, length, flags, code, application id, hop-by-hop, end-to-end)."""
    w0, w1, app, hbh, e2e = HEADER.unpack_from(data)
    return w0 >> 24, w0 & 0xFFFFFF, w1 >> 24, w1 & 0xFFFFFF, app, hbh, e2e


def decode_message(data: bytes, dictionary: Dictionary,
                   check: bool = True) -> tuple[Message, list[AvpError]]:
    """Decode and check one whole message (exactly one frame, whose header passed
    `framing.check_header`). Returns the message and its problems (the first
    one only, per RFC 6733 §7; empty when it is valid). Messages of commands the
    dictionary does not define are only checked for unknown M-bit AVPs.
    check=False skips the grammar (for answers to our own requests, tools and
    benchmarks); AVP lengths that do not fit are still reported."""
    if len(data) < HEADER_LENGTH:
        raise FramingError(5015, f"{len(data)} octets is shorter than a header")
    version, length, flags, code, app, hbh, e2e = parse_header(data)
    if length != len(data):
        raise FramingError(5015, f"header length {length} but {len(data)} octets given",
                           bytes(data[:HEADER_LENGTH]))
    cmd = dictionary.commands.get((code, bool(flags & FLAG_R)))
    grammar = (cmd.grammar if cmd is not None else ANY) if check else None
    avps, err = walk(data, HEADER_LENGTH, length, grammar, dictionary)
    msg = Message(dictionary, code, flags, app, hbh, e2e, avps)
    msg.raw = data
    return msg, ([] if err is None else [err])
