"""One pass over received bytes: AVP objects and grammar checks together.

`walk` reads the AVPs of a region (a message body or a grouped AVP's payload),
builds an `Avp` for each, descends into grouped AVPs to check them (building
their children on the way, so reading them later needs no second pass), and checks
every AVP against the grammar on the way, per RFC 6733 §7:

- unknown AVP with the M bit: 5001 DIAMETER_AVP_UNSUPPORTED (unknown non-M AVPs
  are kept, re-encodable, and never descended into);
- known AVP the grammar does not list, without `* [ AVP ]`: 5008 AVP_NOT_ALLOWED;
- more instances than the grammar allows: 5009, Failed-AVP = first excess one;
- payload of the wrong length for its type, or an AVP length that does not fit:
  5014; not a valid value of its type: 5004 (also an Enumerated value outside
  the dictionary's list when the M bit is set);
- a required AVP missing: 5005, Failed-AVP = an example AVP with zeroed data.

Only the first error is reported (§7); after it, AVPs are still built (an
answer needs Session-Id, Origin-Host, ...) but no longer checked. A length that
does not fit stops the region: the rest of it cannot be framed. Fixed-position
elements (`< >`) are checked for presence, not position: peers put Session-Id
first in practice, and a misplaced one harms nothing (liberal receiver). Values
of leaf AVPs are validated here and decoded lazily on first read.
"""

from __future__ import annotations

import struct


from .avp import Avp, _failed_header
from .datatypes import MIN_LENGTH, ValueProblem
from .dictionary import (CHECK_ADDRESS, CHECK_DECODE, CHECK_ENUM, CHECK_GROUPED, CHECK_SIZE, FLAG_M,
                         FLAG_V, AvpDef, DataType, Dictionary, Grammar)
from .errors import AvpError

_HDR = struct.Struct(">II").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U16 = struct.Struct(">H").unpack_from

# A region with no grammar (an unknown command): anything goes, but unknown
# M-bit AVPs are still refused.
ANY = Grammar((), True, {})


MAX_DEPTH = 16
"""Grouped AVPs nested deeper than this are refused with 5004: Failed-AVP and
Proxy-Info accept any AVP, themselves included, so a peer could otherwise nest
them until the recursion limit (real messages nest 4 or 5 deep)."""


def walk(buf: bytes, pos: int, end: int, grammar: Grammar | None,
         dictionary: Dictionary | None, build: bool = True,
         depth: int = 0) -> tuple[list[Avp], AvpError | None]:
    """Check the AVPs in buf[pos:end] against grammar (unless None) and, if
    build, make an Avp of each. A checked grouped AVP gets its children built in
    the same pass; without a grammar, grouped payloads are read lazily."""
    out: list[Avp] = []
    append = out.append
    index = dictionary.index if dictionary is not None else {}
    g = grammar if grammar is not None else ANY
    table = g.table
    counts: dict[int, int] = {}
    others = 0
    err: AvpError | None = None
    live = grammar is not None          # still checking: no error found yet
    while pos < end:
        if end - pos < 8:      # a region inside a larger buffer: unpack would read past it
            return out, err or AvpError(5014, bytes(buf[pos:end]) + bytes(8 - (end - pos)),
                                        f"{end - pos} stray octets after the last AVP")
        code, fl = _HDR(buf, pos)
        flags = fl >> 24
        length = fl & 0xFFFFFF
        stop = pos + length
        if flags & FLAG_V:
            if length < 12 or stop > end:
                return out, err or AvpError(5014, _failed_header(buf, pos, end, 12),
                                            f"AVP {code} length {length} does not fit")
            key = code | (_U32(buf, pos + 8)[0] << 32)
            start = pos + 12
        else:
            if length < 8 or stop > end:
                return out, err or AvpError(5014, _failed_header(buf, pos, end, 8),
                                            f"AVP {code} length {length} does not fit")
            key = code
            start = pos + 8
        entry = table.get(key)
        if entry is None:
            d = index.get(key)
            others += 1
            if live and (d is None and flags & FLAG_M or d is not None and not g.allows_any):
                err = _misplaced(buf, pos, length, key, d)
                live = False
            elif live and others > g.any_max:
                err = AvpError(5009, _wire(buf, pos, length),
                               f"more than {g.any_max} AVP(s) beyond the grammar's list")
                live = False
        else:
            limit, d = entry
            c = counts[key] = counts.get(key, 0) + 1
            if c > limit and live:
                err = AvpError(5009, _wire(buf, pos, length), f"{d.name} occurs more than {limit} times")
                live = False
        if build:
            avp = Avp(code, flags, key >> 32, buf[start:stop], d, dictionary)
            append(avp)
        if live and d is not None:
            kind = d.check
            if kind == CHECK_SIZE:
                if stop - start != d.size:
                    err = AvpError(5014, _wire(buf, pos, length),
                                   f"{d.name}: length {stop - start}, expected {d.size}")
                    live = False
            elif kind == CHECK_GROUPED:
                if depth >= MAX_DEPTH:
                    err = AvpError(5004, _wire(buf, pos, length),
                                   f"{d.name}: grouped AVPs nested more than {MAX_DEPTH} deep")
                else:
                    children, err = walk(buf, start, stop, d.grammar, dictionary, build, depth + 1)
                    if build and err is None:
                        avp._value = children       # read by the handler anyway: no second walk
                live = err is None
            elif kind:
                err = _check_leaf(buf, pos, length, start, stop, flags, kind, d)
                live = err is None
        pos = (stop + 3) & ~3
    if live:
        for key, minimum, d in g.required:
            if counts.get(key, 0) < minimum:
                return out, AvpError(5005, example_avp(d), f"missing {d.name}")
        if others < g.any_min:
            return out, AvpError(5005, None, f"at least {g.any_min} AVP(s) required")
    return out, err


def _misplaced(buf: bytes, pos: int, length: int, key: int, d: AvpDef | None) -> AvpError:
    if d is None:
        return AvpError(5001, _wire(buf, pos, length),
                        f"unknown AVP {key & 0xFFFFFFFF}/{key >> 32} with the M bit")
    return AvpError(5008, _wire(buf, pos, length), f"{d.name} is not allowed here")


def _check_leaf(buf: bytes, pos: int, length: int, start: int, stop: int, flags: int,
                kind: int, d: AvpDef) -> AvpError | None:
    n = stop - start
    if kind == CHECK_SIZE:
        if n != d.size:
            return AvpError(5014, _wire(buf, pos, length), f"{d.name}: length {n}, expected {d.size}")
    elif kind == CHECK_ENUM:
        if n != 4:
            return AvpError(5014, _wire(buf, pos, length), f"{d.name}: length {n}, expected 4")
        if flags & FLAG_M and d.enum is not None and _I32(buf, start)[0] not in d.enum:
            return AvpError(5004, _wire(buf, pos, length),
                            f"{d.name}: {_I32(buf, start)[0]} is not a defined value")
    elif kind == CHECK_ADDRESS:
        if n < 2:
            return AvpError(5014, _wire(buf, pos, length), f"{d.name}: Address of {n} octets")
        family = _U16(buf, start)[0]
        if (family == 1 and n != 6) or (family == 2 and n != 18):
            return AvpError(5004, _wire(buf, pos, length), f"{d.name}: family {family} address of {n - 2} octets")
    elif kind == CHECK_DECODE and d.decode is not None:
        try:
            d.decode(buf[start:stop])
        except ValueProblem as e:
            return AvpError(e.result_code, _wire(buf, pos, length), f"{d.name}: {e}")
    return None


def _wire(buf: bytes, pos: int, length: int) -> bytes:
    """The AVP at pos as it was received, padded to a 32-bit boundary."""
    return bytes(buf[pos:pos + length]) + b"\0" * (-length & 3)


def example_avp(d: AvpDef) -> bytes:
    """RFC 6733 §7.5: for a missing AVP, its header and minimum-length zero data."""
    data = b"" if d.type is DataType.Grouped else b"\0" * MIN_LENGTH.get(d.type, 0)
    return Avp(d.code, d.flags, d.vendor, data, d, None).encode()


__all__ = ["walk", "example_avp", "ANY", "MAX_DEPTH"]
