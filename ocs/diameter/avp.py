"""AVPs on the wire (RFC 6733 §4.1) and the lazy `Avp` value object.

```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                           AVP Code                            |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|V M P r r r r r|                  AVP Length                   |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                        Vendor-ID (opt)                        |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|    Data ...
+-+-+-+-+-+-+-+-+
```
AVP Length counts header and data but not the padding to the next 32-bit
boundary. Decoding an AVP list only reads headers; each value (and each grouped
AVP's children) is decoded on first access and cached. Unknown AVPs keep their
payload and re-encode byte for byte.
"""

from __future__ import annotations

import struct
from typing import Any

from .datatypes import ValueProblem
from .dictionary import FLAG_M, FLAG_V, AvpDef, Dictionary

_HDR = struct.Struct(">II")
_HDR_V = struct.Struct(">III")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class AvpStructureError(Exception):
    """An AVP header or length does not fit the bytes around it (5014/5009)."""

    def __init__(self, result_code: int, reason: str, failed: bytes):
        super().__init__(reason)
        self.result_code = result_code
        self.failed = failed


class Avp:
    """One AVP. `value` decodes lazily; `encode()` returns header, data and padding."""

    __slots__ = ("code", "flags", "vendor", "data", "defn", "dictionary", "_value")

    def __init__(self, code: int, flags: int, vendor: int, data: bytes,
                 defn: AvpDef | None, dictionary: Dictionary | None, value=None):
        self.code = code
        self.flags = flags
        self.vendor = vendor
        self.data = data
        self.defn = defn
        self.dictionary = dictionary
        self._value = value

    @property
    def name(self) -> str:
        return self.defn.name if self.defn else f"Unknown-AVP({self.code}/{self.vendor})"

    @property
    def key(self) -> tuple[int, int]:
        return (self.code, self.vendor)

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & FLAG_M)

    @property
    def value(self) -> Any:
        """The decoded value; raises ValueProblem if the payload is invalid.
        Grouped AVPs give a list of Avp; unknown AVPs give their raw bytes."""
        v = self._value
        if v is None:
            d = self.defn
            if d is None:
                v = self.data
            elif d.decode is None:
                v = decode_avps(self.data, 0, len(self.data), self.dictionary)
            else:
                v = d.decode(self.data)
            self._value = v
        return v

    @property
    def label(self) -> str | None:
        """For an Enumerated AVP, the name of its value (None if unknown)."""
        d = self.defn
        if d is None or d.enum is None:
            return None
        return d.enum.get(self.value)

    def find(self, name: str) -> "Avp | None":
        """First child of a grouped AVP with that name."""
        d = _by_name(self.dictionary, name)
        code, vendor = d.code, d.vendor
        children = self._value
        if children is None:
            children = self.value
        for a in children:
            if a.code == code and a.vendor == vendor:
                return a
        return None

    def find_all(self, name: str) -> list["Avp"]:
        d = _by_name(self.dictionary, name)
        code, vendor = d.code, d.vendor
        return [a for a in self.value if a.code == code and a.vendor == vendor]

    def get(self, name: str, default=None):
        """The value of the first child with that name, or default."""
        a = self.find(name)
        if a is None:
            return default
        v = a._value
        return a.value if v is None else v

    def encode(self) -> bytes:
        data = self.data
        if len(data) > 0xFFFFF0:
            raise ValueError(f"AVP {self.code} data of {len(data)} octets exceeds the 24-bit AVP Length")
        if self.flags & FLAG_V:
            length = 12 + len(data)
            return _HDR_V.pack(self.code, (self.flags << 24) | length, self.vendor) + data + _PAD[length & 3]
        length = 8 + len(data)
        return _HDR.pack(self.code, (self.flags << 24) | length) + data + _PAD[length & 3]

    def __repr__(self) -> str:
        try:
            v = self.value
        except ValueProblem as e:
            v = f"<invalid: {e}>"
        return f"Avp({self.name}={v!r})"


def _by_name(dictionary: Dictionary | None, name: str) -> AvpDef:
    try:
        return dictionary.by_name[name]          # type: ignore[union-attr]
    except (KeyError, AttributeError):
        raise KeyError(f"no AVP named {name!r} in the dictionary") from None


def make_avp(dictionary: Dictionary, name: str, value, flags: int | None = None) -> Avp:
    """Build an AVP by dictionary name. Grouped values may be a list of Avp,
    a list of (name, value) pairs, or a dict of name -> value (a list value
    repeats the AVP). Enumerated values may be given by label."""
    d = _by_name(dictionary, name)
    encode = d.encode
    if encode is None:                                       # Grouped
        children = build_children(dictionary, value)
        data = b"".join([c.encode() for c in children])
        return Avp(d.code, d.flags if flags is None else flags, d.vendor, data, d, dictionary, children)
    if value.__class__ is str and d.enum_by_name is not None:
        if value not in d.enum_by_name:
            raise ValueError(f"{name} has no value labelled {value!r}")
        value = d.enum_by_name[value]
    return Avp(d.code, d.flags if flags is None else flags, d.vendor, encode(value), d, dictionary)


def build_children(dictionary: Dictionary, value) -> list[Avp]:
    """AVPs from a list of Avp / (name, value) pairs, or a dict. A list value
    repeats a non-grouped AVP; for a grouped AVP a list of pairs (or an empty
    list) is one instance and a non-empty list of dicts or lists is several."""
    if value.__class__ is dict:
        value = value.items()
    out: list[Avp] = []
    append = out.append
    for item in value:
        if item.__class__ is Avp:
            append(item)
            continue
        name, v = item
        if v.__class__ is list and (
            dictionary.by_name[name].encode is not None
            or (v and all(x.__class__ is dict or x.__class__ is list for x in v))
        ):
            out.extend([make_avp(dictionary, name, x) for x in v])
        else:
            append(make_avp(dictionary, name, v))
    return out


def decode_avps(buf: bytes, start: int, end: int, dictionary: Dictionary | None) -> list[Avp]:
    """Read the AVPs in buf[start:end] without checking a grammar (the one
    reader is `decoder.walk`); raise AvpStructureError (5014) on a length that
    runs past the end, is too short for its header, or leaves a fragment too
    short for another header."""
    avps, err = _decoder.walk(buf, start, end, None, dictionary)
    if err is not None:
        raise AvpStructureError(err.result_code, err.message, err.failed_avp or b"")
    return avps


def _failed_header(buf: bytes, pos: int, end: int, size: int) -> bytes:
    """RFC 6733 §7.5: for a bad length, the AVP header with a zeroed payload."""
    header = bytes(buf[pos:min(pos + size, end)])
    return header + b"\0" * (size - len(header))


# last: decoder imports this module's Avp, so it is looked up at call time
from . import decoder as _decoder  # noqa: E402
