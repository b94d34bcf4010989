"""The frozen dictionary index: AVPs, enumerations, grammars and commands.

Built once at start by `dictload` from the files in `dictionaries/`, then only
read. Lookups on the hot path are plain dict gets keyed by (code, vendor) for
AVPs and (command code, is request) for commands.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Callable, Mapping

import attrs


class DataType(enum.Enum):
    """RFC 6733 §4.2 basic and §4.3 derived AVP data formats."""

    OctetString = "OctetString"
    Integer32 = "Integer32"
    Integer64 = "Integer64"
    Unsigned32 = "Unsigned32"
    Unsigned64 = "Unsigned64"
    Float32 = "Float32"
    Float64 = "Float64"
    Grouped = "Grouped"
    Address = "Address"
    Time = "Time"
    UTF8String = "UTF8String"
    DiameterIdentity = "DiameterIdentity"
    DiameterURI = "DiameterURI"
    Enumerated = "Enumerated"
    IPFilterRule = "IPFilterRule"
    QoSFilterRule = "QoSFilterRule"


def int_key(code: int, vendor: int) -> int:
    """(AVP code, Vendor-Id) as one int, for fast dict lookups."""
    return code | (vendor << 32)


FLAG_V = 0x80
FLAG_M = 0x40
FLAG_P = 0x20

UNBOUNDED = -1


@attrs.frozen
class Rule:
    """One grammar element: `n*m < > | { } | [ ]` around an AVP name."""

    name: str                 # AVP name, or "AVP" for the wildcard
    kind: str                 # "fixed", "required" or "optional"
    min: int
    max: int                  # UNBOUNDED for no upper limit
    key: tuple[int, int] | None = None   # (code, vendor) once resolved


@attrs.frozen
class Grammar:
    """A command or grouped AVP grammar (RFC 6733 §3.2, §4.4)."""

    rules: tuple[Rule, ...]
    allows_any: bool          # `* [ AVP ]` present
    by_key: Mapping[tuple[int, int], Rule] = attrs.field(eq=False, repr=False)
    any_min: int = 0          # `1* { AVP }` (Failed-AVP): at least this many AVPs of any kind
    any_max: int = 1 << 62    # `[ AVP ]` (RFC 8506 *-Extension AVPs): at most this many
    # derived for the checker's hot loop, keyed by int_key(code, vendor) (an int
    # hashes far faster than a tuple): key -> (maximum, AvpDef) with UNBOUNDED as a
    # huge number; and (key, minimum, AvpDef) of the rules with a minimum
    table: dict = attrs.field(eq=False, repr=False, factory=dict)
    required: list = attrs.field(eq=False, repr=False, factory=list)


@attrs.frozen
class AvpDef:
    name: str
    code: int
    vendor: int
    type: DataType
    flags: int                 # bits that MUST be set when sending (V, M, P)
    source: str                # "file:line" of its @avp_types entry
    enum: Mapping[int, str] | None = None
    enum_by_name: Mapping[str, int] | None = None
    grammar: Grammar | None = None
    # the type's payload decoder/encoder (datatypes.py), bound once at load so the
    # hot path never hashes the DataType enum; None for Grouped
    decode: Callable | None = attrs.field(default=None, eq=False, repr=False)
    encode: Callable | None = attrs.field(default=None, eq=False, repr=False)
    # how the grammar checker validates a payload: CHECK_* below; size for fixed types
    check: int = attrs.field(default=0, eq=False, repr=False)
    size: int = attrs.field(default=0, eq=False, repr=False)

    @property
    def key(self) -> tuple[int, int]:
        return (self.code, self.vendor)


CHECK_NONE = 0        # OctetString: any payload
CHECK_SIZE = 1        # fixed size (Integer*, Unsigned*, Float*, Time)
CHECK_ENUM = 2        # Enumerated: 4 octets, and a defined value when the M bit is set
CHECK_DECODE = 3      # text and Address: the decoder validates
CHECK_GROUPED = 4
CHECK_ADDRESS = 5     # Address: family 1 needs 4 octets, family 2 needs 16
FIXED_SIZE = {DataType.Integer32: 4, DataType.Unsigned32: 4, DataType.Float32: 4, DataType.Time: 4,
              DataType.Integer64: 8, DataType.Unsigned64: 8, DataType.Float64: 8,
              DataType.Enumerated: 4}


def check_kind(dtype: DataType) -> int:
    if dtype is DataType.Grouped:
        return CHECK_GROUPED
    if dtype is DataType.Enumerated:
        return CHECK_ENUM
    if dtype in FIXED_SIZE:
        return CHECK_SIZE
    if dtype is DataType.OctetString:
        return CHECK_NONE
    if dtype is DataType.Address:
        return CHECK_ADDRESS
    return CHECK_DECODE


@attrs.frozen
class CommandDef:
    name: str
    code: int
    request: bool
    proxiable: bool
    application_id: int | None
    grammar: Grammar
    source: str


@attrs.frozen
class Dictionary:
    """Everything the loaded files define, merged into one read-only index."""

    files: tuple[str, ...]
    avps: Mapping[tuple[int, int], AvpDef]
    avps_by_name: Mapping[str, AvpDef]
    commands: Mapping[tuple[int, bool], CommandDef]
    commands_by_name: Mapping[str, CommandDef]
    # the AVP index keyed by int_key(code, vendor), a plain dict for the hot path
    index: dict = attrs.field(eq=False, repr=False, factory=dict)
    by_name: dict = attrs.field(eq=False, repr=False, factory=dict)

    @classmethod
    def build(cls, files, avps: dict, commands: dict) -> "Dictionary":
        by_name = {a.name: a for a in avps.values()}
        cmd_by_name = {c.name: c for c in commands.values()}
        return cls(
            files=tuple(files),
            avps=MappingProxyType(dict(avps)),
            avps_by_name=MappingProxyType(by_name),
            commands=MappingProxyType(dict(commands)),
            commands_by_name=MappingProxyType(cmd_by_name),
            index={int_key(c, v): a for (c, v), a in avps.items()},
            by_name=by_name,
        )

    def avp(self, name: str) -> AvpDef:
        try:
            return self.avps_by_name[name]
        except KeyError:
            raise KeyError(f"no AVP named {name!r} in the dictionary") from None

    def command(self, code: int, request: bool) -> CommandDef | None:
        return self.commands.get((code, request))

    def summary(self) -> str:
        enums = sum(1 for a in self.avps.values() if a.enum is not None)
        grouped = sum(1 for a in self.avps.values() if a.grammar is not None)
        vendors = sorted({a.vendor for a in self.avps.values()})
        return (
            f"{len(self.files)} files ({', '.join(self.files)}): "
            f"{len(self.avps)} AVPs, {enums} enumerations, {grouped} grouped grammars, "
            f"{len(self.commands)} commands; vendors {vendors}"
        )
