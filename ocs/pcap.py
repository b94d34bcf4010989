"""Read TCP payloads from pcap and pcapng captures (no dependencies).

Enough of the formats to pull Diameter out of a tshark/tcpdump capture:
classic pcap (either byte order, micro- or nanosecond) and pcapng (SHB, IDB,
EPB, SPB); link types Ethernet (1), BSD loopback (0), raw IP (101), Linux
cooked v1 (113) and v2 (276); IPv4 and IPv6; TCP. Payloads are reassembled
per direction by sequence number, duplicates (retransmissions) dropped.
"""

from __future__ import annotations

import struct
from collections import defaultdict


def _packets(data: bytes):
    """Yield (linktype, frame bytes)."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    elif magic == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(data)
        return
    else:
        raise ValueError("not a pcap or pcapng file")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, pos + 8)[0]
        yield linktype, data[pos + 16: pos + 16 + incl]
        pos += 16 + incl


def _pcapng(data: bytes):
    pos = 0
    endian = "<"
    linktypes: list[int] = []
    while pos + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, pos)[0]
        if btype == 0x0A0D0D0A:
            endian = "<" if data[pos + 8: pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            linktypes = []
        blen = struct.unpack_from(endian + "I", data, pos + 4)[0]
        if blen < 12:
            break
        body = data[pos + 8: pos + blen - 4]
        if btype == 1:
            linktypes.append(struct.unpack_from(endian + "H", body, 0)[0])
        elif btype == 6:
            iface, _, _, caplen = struct.unpack_from(endian + "IIII", body, 0)
            yield linktypes[iface], body[20: 20 + caplen]
        elif btype == 3:
            yield linktypes[0], body[4:]
        pos += blen


def _ip_payload(linktype: int, frame: bytes):
    if linktype == 1:
        etype = struct.unpack_from(">H", frame, 12)[0]
        off = 14
        while etype == 0x8100:
            etype = struct.unpack_from(">H", frame, off + 2)[0]
            off += 4
        return frame[off:] if etype in (0x0800, 0x86DD) else None
    if linktype == 0:
        return frame[4:]
    if linktype == 101:
        return frame
    if linktype == 113:
        return frame[16:]
    if linktype == 276:
        return frame[20:]
    return None


def tcp_streams(data: bytes, port: int) -> dict[tuple, bytes]:
    """{(src, sport, dst, dport): payload} for TCP segments to or from `port`."""
    segments: dict[tuple, dict[int, bytes]] = defaultdict(dict)
    order: list[tuple] = []
    for linktype, frame in _packets(data):
        ip = _ip_payload(linktype, frame)
        if not ip:
            continue
        version = ip[0] >> 4
        if version == 4:
            ihl = (ip[0] & 15) * 4
            total = struct.unpack_from(">H", ip, 2)[0]
            if ip[9] != 6:
                continue
            src, dst = ip[12:16], ip[16:20]
            tcp = ip[ihl:total]
        elif version == 6:
            if ip[6] != 6:
                continue
            plen = struct.unpack_from(">H", ip, 4)[0]
            src, dst = ip[8:24], ip[24:40]
            tcp = ip[40:40 + plen]
        else:
            continue
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        if port not in (sport, dport):
            continue
        payload = tcp[(tcp[12] >> 4) * 4:]
        if not payload:
            continue
        key = (bytes(src), sport, bytes(dst), dport)
        if key not in segments:
            order.append(key)
        segments[key].setdefault(seq, payload)
    out = {}
    for key in order:
        segs = segments[key]
        out[key] = b"".join(segs[s] for s in sorted(segs))
    return out
