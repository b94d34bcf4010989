"""The frozen dictionary index: AVPs, enumerations, grammars and commands.

Built once at start by `dictload` from the files in `dictionaries/`, then only
read. Lookups on the hot path are plain dict gets keyed by (code, vendor) for
AVPs and (command code, is request) for commands.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping

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

    @property
    def key(self) -> tuple[int, int]:
        return (self.code, self.vendor)


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
