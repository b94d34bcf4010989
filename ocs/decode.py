"""`ocs decode` / `tools/decode.py`: hex or pcap -> indented AVP trees."""

from __future__ import annotations

import os
import sys

from .diameter.dictionary import Dictionary
from .diameter.errors import FramingError
from .diameter.framing import Framer
from .diameter.grammar import first_error
from .diameter.message import decode_message
from .diameter.render import render_message
from .pcap import tcp_streams


def render_frames(data: bytes, dictionary: Dictionary, out) -> int:
    """Print every message in a byte stream; returns the number of problems."""
    frames, error = Framer(max_length=1 << 24).feed(data)
    problems = 0
    for frame in frames:
        msg, errors = decode_message(frame, dictionary)
        print(render_message(msg), file=out)
        err = first_error(errors, msg)
        if err is not None:
            problems += 1
            print(f"  !! would be answered {err.result_code}: {err.message}", file=out)
        print(file=out)
    if error is not None:
        problems += 1
        print(f"!! framing error {error.result_code}: {error.reason}", file=out)
    return problems


def run(source: str, dictionary: Dictionary, port: int = 3868, out=sys.stdout) -> int:
    if source == "-":
        text = sys.stdin.read()
    elif os.path.exists(source):
        with open(source, "rb") as fh:
            raw = fh.read()
        if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                       b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"):
            problems = 0
            for (src, sport, dst, dport), payload in tcp_streams(raw, port).items():
                print(f"== TCP {_addr(src)}:{sport} -> {_addr(dst)}:{dport}", file=out)
                problems += render_frames(payload, dictionary, out)
            return 1 if problems else 0
        text = raw.decode("ascii", "replace")
    else:
        text = source
    try:
        data = bytes.fromhex("".join(text.split()))
    except ValueError as e:
        print(f"ocs decode: not hex: {e}", file=sys.stderr)
        return 2
    return 1 if render_frames(data, dictionary, out) else 0


def _addr(raw: bytes) -> str:
    import ipaddress
    return str(ipaddress.ip_address(raw))


__all__ = ["run", "render_frames", "FramingError"]
