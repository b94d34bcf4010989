"""AVP data formats of RFC 6733 §4.2 (basic) and §4.3 (derived): bytes <-> values.

Each decoder takes the AVP payload (without header or padding) and returns the
value, or raises `ValueProblem` with the Result-Code to answer: 5014 when the
payload length is wrong for a fixed-size type, 5004 when the content is not a
valid value of the type. Encoders raise ValueError/TypeError on values that do
not fit; those are programming errors on our side, never peer input.

Time (§4.3.1): four octets of NTP seconds since 1900-01-01 UTC. RFC 2030 §3
extends the range past 2036: a value with the most significant bit set counts
from 1900 (era 0, 1968-2036); with it clear, from 2036-02-07T06:28:16Z (era 1).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import struct

from .dictionary import DataType

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_FAMILY = struct.Struct(">H")

NTP_UNIX_OFFSET = 2_208_988_800          # seconds from 1900-01-01 to 1970-01-01
NTP_ERA1_UNIX = 2**32 - NTP_UNIX_OFFSET  # 2036-02-07T06:28:16Z as Unix seconds
_UTC = _dt.timezone.utc

ADDRESS_FAMILY_IPV4 = 1
ADDRESS_FAMILY_IPV6 = 2


class ValueProblem(Exception):
    def __init__(self, result_code: int, reason: str):
        super().__init__(reason)
        self.result_code = result_code


def _fixed(st: struct.Struct):
    size = st.size

    def decode(data: bytes):
        if len(data) != size:
            raise ValueProblem(5014, f"length {len(data)}, expected {size}")
        return st.unpack(data)[0]

    def encode(value) -> bytes:
        try:
            return st.pack(value)
        except struct.error as e:
            raise ValueError(f"{value!r} does not fit: {e}") from None

    return decode, encode


def _utf8_decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueProblem(5004, f"not UTF-8: {e.reason}") from None


def _ascii_decode(data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueProblem(5004, "not ASCII") from None


def _text_encode(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def _octets_decode(data: bytes) -> bytes:
    return bytes(data)


def _octets_encode(value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def address_decode(data: bytes):
    """Address: 2-octet IANA family, then the address. IPv4/IPv6 become ipaddress
    objects; other families stay as (family, bytes)."""
    if len(data) < 2:
        raise ValueProblem(5014, "Address shorter than its family field")
    family = _FAMILY.unpack_from(data)[0]
    raw = bytes(data[2:])
    if family == ADDRESS_FAMILY_IPV4:
        if len(raw) != 4:
            raise ValueProblem(5004, f"IPv4 Address of {len(raw)} octets")
        return ipaddress.IPv4Address(raw)
    if family == ADDRESS_FAMILY_IPV6:
        if len(raw) != 16:
            raise ValueProblem(5004, f"IPv6 Address of {len(raw)} octets")
        return ipaddress.IPv6Address(raw)
    return (family, raw)


def address_encode(value) -> bytes:
    if isinstance(value, tuple):
        family, raw = value
        return _FAMILY.pack(family) + bytes(raw)
    if isinstance(value, str):
        value = ipaddress.ip_address(value)
    if isinstance(value, ipaddress.IPv4Address):
        return _FAMILY.pack(ADDRESS_FAMILY_IPV4) + value.packed
    if isinstance(value, ipaddress.IPv6Address):
        return _FAMILY.pack(ADDRESS_FAMILY_IPV6) + value.packed
    raise TypeError(f"not an address: {value!r}")


def time_decode(data: bytes) -> _dt.datetime:
    if len(data) != 4:
        raise ValueProblem(5014, f"Time of {len(data)} octets")
    ntp = _U32.unpack(data)[0]
    if ntp & 0x8000_0000:
        unix = ntp - NTP_UNIX_OFFSET
    else:
        unix = ntp + NTP_ERA1_UNIX
    return _dt.datetime.fromtimestamp(unix, _UTC)


def time_encode(value) -> bytes:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: give Time values a timezone")
        unix = int(value.timestamp())
    else:
        unix = int(value)
    ntp = unix + NTP_UNIX_OFFSET
    if ntp >= 2**32:
        ntp -= 2**32                      # era 1: MSB clear
        if ntp & 0x8000_0000:
            raise ValueError(f"time {value!r} beyond the RFC 2030 range (2104)")
    elif not ntp & 0x8000_0000:
        raise ValueError(f"time {value!r} before 1968-01-20, not representable")
    return _U32.pack(ntp)


_i32 = _fixed(_I32)
DECODERS = {
    DataType.OctetString: _octets_decode,
    DataType.Integer32: _i32[0],
    DataType.Integer64: _fixed(_I64)[0],
    DataType.Unsigned32: _fixed(_U32)[0],
    DataType.Unsigned64: _fixed(_U64)[0],
    DataType.Float32: _fixed(_F32)[0],
    DataType.Float64: _fixed(_F64)[0],
    DataType.Address: address_decode,
    DataType.Time: time_decode,
    DataType.UTF8String: _utf8_decode,
    DataType.DiameterIdentity: _ascii_decode,
    DataType.DiameterURI: _ascii_decode,
    DataType.Enumerated: _i32[0],
    DataType.IPFilterRule: _ascii_decode,
    DataType.QoSFilterRule: _ascii_decode,
}

ENCODERS = {
    DataType.OctetString: _octets_encode,
    DataType.Integer32: _i32[1],
    DataType.Integer64: _fixed(_I64)[1],
    DataType.Unsigned32: _fixed(_U32)[1],
    DataType.Unsigned64: _fixed(_U64)[1],
    DataType.Float32: _fixed(_F32)[1],
    DataType.Float64: _fixed(_F64)[1],
    DataType.Address: address_encode,
    DataType.Time: time_encode,
    DataType.UTF8String: _text_encode,
    DataType.DiameterIdentity: _text_encode,
    DataType.DiameterURI: _text_encode,
    DataType.Enumerated: _i32[1],
    DataType.IPFilterRule: _text_encode,
    DataType.QoSFilterRule: _text_encode,
}

# Minimum payload of each type, used to build the zero-filled example AVP of a
# missing-AVP Failed-AVP (RFC 6733 §7.5).
MIN_LENGTH = {
    DataType.Integer32: 4, DataType.Unsigned32: 4, DataType.Enumerated: 4,
    DataType.Float32: 4, DataType.Time: 4, DataType.Integer64: 8,
    DataType.Unsigned64: 8, DataType.Float64: 8, DataType.Address: 2,
}
