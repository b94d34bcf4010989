"""Shared definitions of the load generator (`ocs load`, ocs.load): the options
(`LoadOptions`, with the loopback-only rule), the request kinds, the Diameter
wire constants (header and AVP structs, command and AVP codes) and the AVP walk
over encoded bytes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

KINDS = ("I", "U", "T", "E")
K_I, K_U, K_T, K_E = range(4)
CC_REQUEST_TYPE = (1, 2, 3, 4)
SESSION_DIGITS = 12                      # fixed-width session counter at the end of Session-Id

_HDR = struct.Struct(">IIIII")
_IDS = struct.Struct(">II")
_AVP = struct.Struct(">II")
_U32 = struct.Struct(">I")

CMD_CER, CMD_DWR, CMD_DPR, CMD_CC = 257, 280, 282, 272
AVP_SESSION_ID, AVP_CC_REQUEST_NUMBER = 263, 415
AVP_SUBSCRIPTION_ID, AVP_SUBSCRIPTION_ID_DATA = 443, 444
AVP_RESULT_CODE, AVP_EXPERIMENTAL_RESULT, AVP_EXPERIMENTAL_RESULT_CODE = 268, 297, 298
AVP_MSCC = 456


def is_loopback(host: str) -> bool:
    """Whether host is 'localhost' or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass
class LoadOptions:
    host: str = "127.0.0.1"
    port: int = 3868
    connections: int = 4                 # in all, spread over the processes
    sessions: int = 1000                 # concurrent sessions in all
    updates: int = 2                     # CCR-UPDATEs per session
    subscribers: int = 1000              # subscriber indexes 0..subscribers-1 (+ subscriber_first)
    subscriber_first: int = 0
    subscriber_prefix: str = "4670"
    subscriber_digits: int = 7
    subscriber_order: str = "round-robin"   # or "random"
    octets: int = 1_000_000              # CC-Total-Octets of the Used-Service-Unit on U and T
    rating_group: int = 10
    event_ratio: float = 0.0             # fraction of sessions that are one CCR-EVENT
    rate: float | None = None            # requests/s in all; None: as fast as possible
    requests: int | None = None          # requests in all
    duration: float | None = 10.0        # seconds; run_load uses 10 when both bounds are None
    warmup: float = 0.0                  # seconds left out of CCR/s and latency
    processes: int = 1
    timeout: float = 10.0                # connect + CEA, the last answers, and the stall limit
    origin_realm: str = "localdomain"
    destination_realm: str = "localdomain"
    host_first: int = 0                  # Origin-Host numbering: load{host_first + n}.localdomain
    mscc_codes: bool = True              # also count MSCC-level Result-Codes
    seed: int | None = None
    progress: bool = True                # a progress line a second on stderr
    dictionaries: str | None = None      # *.dict folder (default: the shipped one)

    def validate(self) -> None:
        def need(cond, what):
            if not cond:
                raise ValueError(what)
        # a load generator floods its target: it only ever drives a node on this host
        need(is_loopback(self.host), f"--host {self.host!r} is not a loopback address: the load "
             "generator only drives a node on this host (127.0.0.0/8, ::1 or localhost)")
        need(self.connections >= 1, "--connections must be at least 1")
        need(self.processes >= 1, "--processes must be at least 1")
        need(self.connections >= self.processes, "--connections must be at least --processes")
        need(self.sessions >= 1, "--sessions must be at least 1")
        need(self.updates >= 0, "--updates must be 0 or more")
        need(self.subscribers >= 1, "--subscribers must be at least 1")
        need(1 <= self.subscriber_digits <= 19, "--subscriber-digits must be 1..19")
        need(self.subscriber_first >= 0
             and self.subscriber_first + self.subscribers <= 10 ** self.subscriber_digits,
             "the subscriber indexes do not fit in --subscriber-digits digits")
        need(self.subscriber_order in ("round-robin", "random"),
             "--subscriber-order is round-robin or random")
        need(0.0 <= self.event_ratio <= 1.0, "--event-ratio must be within 0..1")
        need(self.rate is None or self.rate > 0, "--rate must be positive")
        need(self.requests is None or self.requests >= 1, "--requests must be at least 1")
        need(self.duration is None or self.duration > 0, "--duration must be positive")
        need(self.warmup >= 0, "--warmup must be 0 or more")
        need(self.duration is None or self.warmup < self.duration, "--warmup must be below --duration")
        need(self.timeout > 0, "--timeout must be positive")
        need(0 <= self.octets < 1 << 64, "--octets must fit in Unsigned64")


def _walk(data: bytes, start: int, end: int):
    """(code, vendor flag, data offset, data length) of the AVPs in data[start:end]."""
    p = start
    while p + 8 <= end:
        code, fl = _AVP.unpack_from(data, p)
        length = fl & 0xFFFFFF
        hdr = 12 if fl & 0x80000000 else 8
        if length < hdr or p + length > end:
            raise ValueError(f"bad AVP length {length} at {p}")
        yield code, bool(fl & 0x80000000), p + hdr, length - hdr
        p += (length + 3) & ~3
