"""Check a message or grouped AVP against its Command Code Format grammar.

RFC 6733 §7 rules applied here, in the order an AVP list is read:
- unknown AVP with the M bit: 5001 DIAMETER_AVP_UNSUPPORTED (unknown non-M AVPs
  are ignored, and never descended into);
- known AVP the grammar does not list, without `* [ AVP ]`: 5008 AVP_NOT_ALLOWED;
- more instances than the grammar allows: 5009, Failed-AVP = first excess one;
- payload of the wrong length for its type: 5014; not a valid value: 5004
  (also an Enumerated value outside the dictionary's list when the M bit is set);
- grouped AVPs are checked recursively against their own grammar;
- a required AVP missing: 5005, Failed-AVP = an example AVP with zeroed data.
Only the first error is reported, as §7 asks. Fixed-position elements (`< >`)
are checked for presence, not position: peers put Session-Id first in practice
and a misplaced one harms nothing, so we accept it (liberal receiver).
Checking validates every known value straight from the bytes (grouped payloads
are walked without building objects), so a handler that reads values afterwards,
lazily, never meets a decode error.
"""

from __future__ import annotations

import struct

from .avp import Avp, _failed_header
from .datatypes import MIN_LENGTH, ValueProblem
from .dictionary import (int_key, CHECK_DECODE, CHECK_ENUM, CHECK_GROUPED, CHECK_SIZE, FLAG_M, FLAG_V, UNBOUNDED,
                         AvpDef, DataType, Dictionary, Grammar)
from .errors import AvpError
from .message import Message

_HDR = struct.Struct(">II").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from


def check_message(msg: Message) -> AvpError | None:
    cmd = msg.dictionary.command(msg.code, msg.is_request)
    if cmd is None:
        return None
    buf = msg.raw if msg.raw is not None else msg.encode()
    return _check_region(buf, 20, len(buf), cmd.grammar, msg.dictionary)


def check_avps(avps: list[Avp], grammar: Grammar, dictionary: Dictionary) -> AvpError | None:
    """Check AVP objects (e.g. a grouped AVP built or decoded earlier)."""
    buf = b"".join([a.encode() for a in avps])
    return _check_region(buf, 0, len(buf), grammar, dictionary)


def _check_region(buf: bytes, pos: int, end: int, grammar: Grammar,
                  dictionary: Dictionary) -> AvpError | None:
    """Check the AVPs in buf[pos:end] against a grammar, straight from the bytes:
    no objects are built, grouped AVPs are checked in place, recursively."""
    index = dictionary.index
    max_by_key = grammar.max_by_key
    counts: dict[int, int] = {}
    others = 0
    while pos < end:
        if end - pos < 8:
            return AvpError(5014, bytes(buf[pos:end]) + bytes(8 - (end - pos)),
                            f"{end - pos} stray octets after the last AVP")
        code, fl = _HDR(buf, pos)
        flags = fl >> 24
        length = fl & 0xFFFFFF
        if flags & FLAG_V:
            if length < 12 or pos + length > end:
                return AvpError(5014, _failed_header(buf, pos, end, 12), f"AVP {code} length {length}")
            vendor = _U32(buf, pos + 8)[0]
            start = pos + 12
        else:
            if length < 8 or pos + length > end:
                return AvpError(5014, _failed_header(buf, pos, end, 8), f"AVP {code} length {length}")
            vendor = 0
            start = pos + 8
        stop = pos + length
        key = code | (vendor << 32)
        d = index.get(key)
        limit = max_by_key.get(key)
        if limit is None:
            others += 1
            if d is None:
                if flags & FLAG_M:
                    return AvpError(5001, _wire(buf, pos, length), f"unknown AVP {code}/{vendor} with the M bit")
                pos += (length + 3) & ~3
                continue
            if not grammar.allows_any:
                return AvpError(5008, _wire(buf, pos, length), f"{d.name} is not allowed here")
        else:
            c = counts[key] = counts.get(key, 0) + 1
            if c > limit:
                return AvpError(5009, _wire(buf, pos, length), f"{d.name} occurs more than {limit} times")
        if d is not None:
            kind = d.check
            if kind == CHECK_SIZE:
                if stop - start != d.size:
                    return AvpError(5014, _wire(buf, pos, length),
                                    f"{d.name}: length {stop - start}, expected {d.size}")
            elif kind == CHECK_GROUPED:
                err = _check_region(buf, start, stop, d.grammar, dictionary)
                if err is not None:
                    return err
            elif kind == CHECK_ENUM:
                if stop - start != 4:
                    return AvpError(5014, _wire(buf, pos, length), f"{d.name}: length {stop - start}, expected 4")
                if flags & FLAG_M and d.enum is not None and _I32(buf, start)[0] not in d.enum:
                    return AvpError(5004, _wire(buf, pos, length),
                                    f"{d.name}: {_I32(buf, start)[0]} is not a defined value")
            elif kind == CHECK_DECODE:
                try:
                    d.decode(buf[start:stop])
                except ValueProblem as e:
                    return AvpError(e.result_code, _wire(buf, pos, length), f"{d.name}: {e}")
        pos += (length + 3) & ~3
    for rule in grammar.required:
        if counts.get(int_key(*rule.key), 0) < rule.min:
            return AvpError(5005, example_avp(dictionary.avps[rule.key]), f"missing {rule.name}")
    if others < grammar.any_min:
        return AvpError(5005, None, f"at least {grammar.any_min} AVP(s) required")
    return None


def _wire(buf: bytes, pos: int, length: int) -> bytes:
    """The AVP at pos as it was received, padded to a 32-bit boundary."""
    return bytes(buf[pos:pos + length]) + b"\0" * (-length & 3)


def example_avp(d: AvpDef) -> bytes:
    """RFC 6733 §7.5: for a missing AVP, its header and minimum-length zero data."""
    data = b"\0" * MIN_LENGTH.get(d.type, 0)
    if d.type is DataType.Grouped:
        data = b""
    return Avp(d.code, d.flags, d.vendor, data, d, None).encode()


def first_error(errors: list[AvpError], msg: Message) -> AvpError | None:
    """The decode errors if any, else the grammar's verdict."""
    if errors:
        return errors[0]
    return check_message(msg)


__all__ = ["check_message", "check_avps", "example_avp", "first_error", "UNBOUNDED"]
