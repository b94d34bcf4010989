"""Load `dictionaries/*.dict` files into one frozen `Dictionary`.

The format is documented in `dictionaries/README.md`. Any inconsistency raises
`DictionaryError` naming the file and line; the node refuses to start on it.
Loading happens in two passes: each file is parsed alone into plain records,
then the files are merged in `@inherits` order and every grammar name resolved.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Iterable

import attrs

from .dictionary import (
    FIXED_SIZE, check_kind, int_key, FLAG_M, FLAG_P, FLAG_V, UNBOUNDED, AvpDef, CommandDef, DataType, Dictionary, Grammar, Rule,
)
from .datatypes import DECODERS, ENCODERS
from .errors import DictionaryError

_SECTIONS = ("@avp_types", "@enum", "@grouped", "@messages", "@redefine")
_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_DEF_RE = re.compile(rf"^<?\s*({_NAME})\s*>?\s*::=\s*<\s*(AVP|Diameter)\s+Header\s*:\s*(.*?)\s*>\s*(.*)$")
_ELEM_RE = re.compile(rf"(\d*)\s*(\*)?\s*(\d*)\s*([<{{\[])\s*({_NAME})\s*([>}}\]])")
_CLOSE = {"<": ">", "{": "}", "[": "]"}
_KIND = {"<": "fixed", "{": "required", "[": "optional"}


@attrs.define
class _Def:
    """A grammar definition as written, before names are resolved."""

    name: str
    header_kind: str          # "AVP" or "Diameter"
    header: str
    elements: list            # (qual_min, star, qual_max, open, name, where)
    where: str
    redefine: bool


@attrs.define
class _File:
    name: str
    path: str
    inherits: list = attrs.Factory(list)
    vendor: int = 0
    vendor_overrides: dict = attrs.Factory(dict)     # avp name -> vendor
    avps: list = attrs.Factory(list)                 # (name, code, type, flags, where)
    enums: dict = attrs.Factory(dict)                # avp name -> ([(label, value, where)], where)
    defs: list = attrs.Factory(list)                 # _Def


def _fail(where: str, msg: str) -> DictionaryError:
    return DictionaryError(f"{where}: {msg}")


_DIGITS = re.compile(r"[0-9]+")
_NAME_RE = re.compile(_NAME)


def _uint(text: str, bits: int, where: str, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise _fail(where, f"{what} {text!r} is not a number")
    value = int(text)
    if value >= 1 << bits:
        raise _fail(where, f"{what} {value} does not fit in {bits} bits")
    return value


def parse_file(path: str) -> _File:
    stem = os.path.basename(path)[: -len(".dict")] if path.endswith(".dict") else os.path.basename(path)
    f = _File(name="", path=path)
    section = None
    enum_name = None
    current: _Def | None = None
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DictionaryError(f"{path}:1: cannot read: {e}") from None
    for lineno, raw in enumerate(lines, 1):
        where = f"{path}:{lineno}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            words = line.split()
            directive = words[0]
            current = None
            if directive == "@name":
                if len(words) != 2:
                    raise _fail(where, "@name takes one word")
                if words[1] != stem:
                    raise _fail(where, f"@name {words[1]} does not match the file name {stem}")
                f.name = words[1]
            elif directive == "@inherits":
                if len(words) != 2:
                    raise _fail(where, "@inherits takes one file name")
                f.inherits.append((words[1], where))
            elif directive == "@vendor":
                if len(words) < 2:
                    raise _fail(where, "@vendor takes a Vendor-Id and an optional name")
                f.vendor = _uint(words[1], 32, where, "Vendor-Id")
            elif directive == "@avp_vendor_id":
                if len(words) < 3:
                    raise _fail(where, "@avp_vendor_id takes a Vendor-Id and AVP names")
                vendor = _uint(words[1], 32, where, "Vendor-Id")
                for name in words[2:]:
                    f.vendor_overrides[name] = (vendor, where)
            elif directive in _SECTIONS:
                section = directive
                if directive == "@enum":
                    if len(words) != 2:
                        raise _fail(where, "@enum takes the name of one Enumerated AVP")
                    enum_name = words[1]
                    if enum_name in f.enums:
                        raise _fail(where, f"second @enum for {enum_name}")
                    f.enums[enum_name] = ([], where)
                elif len(words) != 1:
                    raise _fail(where, f"{directive} takes no arguments")
            else:
                raise _fail(where, f"unknown directive {directive}")
            continue
        if section is None:
            raise _fail(where, "text outside any section")
        if section == "@avp_types":
            words = line.split()
            if len(words) != 4:
                raise _fail(where, "expected 'Name Code Type Flags'")
            if not _NAME_RE.fullmatch(words[0]) or words[0] == "AVP":
                raise _fail(where, f"bad AVP name {words[0]!r}: letters, digits, '-' and '_'")
            f.avps.append((words[0], _uint(words[1], 32, where, "AVP code"), words[2], words[3], where))
        elif section == "@enum":
            words = line.split()
            if len(words) != 2 or not re.fullmatch(r"-?[0-9]+", words[1]):
                raise _fail(where, "expected 'LABEL Value'")
            f.enums[enum_name][0].append((words[0], int(words[1]), where))
        else:
            m = _DEF_RE.match(line)
            if m:
                current = _Def(m.group(1), m.group(2), m.group(3), [], where, section == "@redefine")
                if (section == "@grouped") != (m.group(2) == "AVP") and section != "@redefine":
                    raise _fail(where, f"{m.group(2)} Header definition in the {section} section")
                f.defs.append(current)
                rest = m.group(4)
            else:
                if current is None:
                    raise _fail(where, "grammar element outside a definition")
                rest = line
            _parse_elements(rest, current, where)
    if not f.name:
        raise _fail(f"{path}:1", "missing @name")
    return f


def _parse_elements(text: str, d: _Def, where: str) -> None:
    pos = 0
    text = text.strip()
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _ELEM_RE.match(text, pos)
        if not m or _CLOSE[m.group(4)] != m.group(6):
            raise _fail(where, f"cannot read grammar element at {text[pos:]!r}")
        d.elements.append((m.group(1), m.group(2), m.group(3), m.group(4), m.group(5), where))
        pos = m.end()


def _order(files: dict[str, _File]) -> list[_File]:
    done: list[_File] = []
    state: dict[str, str] = {}

    def visit(f: _File, chain: tuple) -> None:
        if state.get(f.name) == "done":
            return
        if state.get(f.name) == "visiting":
            raise _fail(f.path + ":1", f"@inherits cycle: {' -> '.join(chain + (f.name,))}")
        state[f.name] = "visiting"
        for parent, where in f.inherits:
            if parent not in files:
                raise _fail(where, f"@inherits {parent}: no such dictionary file")
            visit(files[parent], chain + (f.name,))
        state[f.name] = "done"
        done.append(f)

    for name in sorted(files):
        visit(files[name], ())
    return done


def _flags(text: str, where: str) -> int:
    if text == "-":
        return 0
    bits = 0
    for ch in text:
        bit = {"M": FLAG_M, "V": FLAG_V, "P": FLAG_P}.get(ch)
        if bit is None or bits & bit:
            raise _fail(where, f"bad flags {text!r}: use M, V, P once each, or -")
        bits |= bit
    return bits


def _ancestors(f: _File, files: dict[str, _File]) -> set[str]:
    seen: set[str] = set()
    stack = [p for p, _ in f.inherits]
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.add(p)
            stack.extend(q for q, _ in files[p].inherits)
    return seen


def load_files(paths: Iterable[str]) -> Dictionary:
    parsed: dict[str, _File] = {}
    for path in paths:
        f = parse_file(path)
        if f.name in parsed:
            raise _fail(f"{path}:1", f"dictionary {f.name} loaded twice")
        parsed[f.name] = f
    ordered = _order(parsed)

    avps: dict[tuple[int, int], AvpDef] = {}
    by_name: dict[str, AvpDef] = {}
    owner: dict[str, str] = {}          # definition name -> file that defined it
    avp_owner: dict[str, str] = {}      # AVP name -> file of its @avp_types line
    for f in ordered:
        visible = _ancestors(f, parsed) | {f.name}
        for name, (vendor, where) in f.vendor_overrides.items():
            if name not in {a[0] for a in f.avps}:
                raise _fail(where, f"@avp_vendor_id names {name}, which this file does not define")
        for name, code, type_name, flag_text, where in f.avps:
            try:
                dtype = DataType(type_name)
            except ValueError:
                raise _fail(where, f"unknown type {type_name}") from None
            vendor = f.vendor_overrides.get(name, (f.vendor, None))[0]
            flags = _flags(flag_text, where)
            if bool(flags & FLAG_V) != (vendor != 0):
                raise _fail(where, f"{name}: V flag {'missing' if vendor else 'set'} for vendor {vendor}")
            if name in by_name:
                raise _fail(where, f"AVP {name} already defined at {by_name[name].source}")
            if (code, vendor) in avps:
                other = avps[(code, vendor)]
                raise _fail(where, f"AVP code {code} vendor {vendor} already defined as {other.name} at {other.source}")
            a = AvpDef(name, code, vendor, dtype, flags, where,
                       decode=DECODERS.get(dtype), encode=ENCODERS.get(dtype),
                       check=check_kind(dtype), size=FIXED_SIZE.get(dtype, 0))
            avps[a.key] = a
            by_name[name] = a
            avp_owner[name] = f.name
        for name, (values, where) in f.enums.items():
            a = by_name.get(name)
            if a is None:
                raise _fail(where, f"@enum {name}: no such AVP")
            if avp_owner[name] not in visible:
                raise _fail(where, f"@enum {name}: the AVP is in {avp_owner[name]}, which this file does not inherit")
            if a.type is not DataType.Enumerated:
                raise _fail(where, f"@enum {name}: the AVP is {a.type.value}, not Enumerated")
            if a.enum is not None:
                raise _fail(where, f"@enum {name}: values already given")
            labels: dict[str, int] = {}
            codes: dict[int, str] = {}
            for label, value, vwhere in values:
                if label in labels:
                    raise _fail(vwhere, f"{name}: duplicate label {label}")
                if value in codes:
                    raise _fail(vwhere, f"{name}: value {value} already {codes[value]}")
                if not -2**31 <= value < 2**31:
                    raise _fail(vwhere, f"{name}: {value} is not an Integer32")
                labels[label] = value
                codes[value] = label
            a = attrs.evolve(a, enum=codes, enum_by_name=labels)
            avps[a.key] = a
            by_name[name] = a

    commands: dict[tuple[int, bool], CommandDef] = {}
    cmd_by_name: dict[str, CommandDef] = {}
    for f in ordered:
        ancestors = _ancestors(f, parsed)
        visible = ancestors | {f.name}
        for d in f.defs:
            grammar = _resolve(d, by_name, visible, avp_owner)
            if d.redefine:
                if owner.get(d.name) not in ancestors:
                    raise _fail(d.where, f"@redefine {d.name}: no inherited file defines it")
            elif d.name in owner:
                raise _fail(d.where, f"{d.name} already defined in {owner[d.name]}")
            owner[d.name] = f.name
            if d.header_kind == "AVP":
                a = _grouped_header(d, by_name)
                if avp_owner[a.name] not in visible:
                    raise _fail(d.where, f"{d.name} is an AVP of {avp_owner[a.name]}, which this file "
                                         "does not inherit")
                a = attrs.evolve(a, grammar=grammar)
                avps[a.key] = a
                by_name[a.name] = a
            else:
                c = _command_header(d, grammar)
                key = (c.code, c.request)
                old = cmd_by_name.get(d.name)
                if d.redefine and old is not None and (old.code, old.request) != key:
                    raise _fail(d.where, f"@redefine {d.name} changes its header from {old.code}"
                                         f"{', REQ' if old.request else ''}")
                if key in commands and not (d.redefine and commands[key].name == d.name):
                    raise _fail(d.where, f"command {key} already defined as {commands[key].name} at {commands[key].source}")
                commands[key] = c
                cmd_by_name[c.name] = c
    for a in avps.values():
        if a.type is DataType.Grouped and a.grammar is None:
            raise _fail(a.source, f"Grouped AVP {a.name} has no grammar")
    return _bind([f.name for f in ordered], avps, commands)


def _bind(files: list, avps: dict, commands: dict) -> Dictionary:
    """Fill every grammar's checker tables with the final AvpDefs, once every
    file and @redefine is applied (grouped AVPs may nest each other, even
    recursively). The grammars are frozen, but their `table` and `required`
    are containers made empty by `_resolve` and filled here, in place."""
    big = 1 << 62
    grammars = [a.grammar for a in avps.values() if a.grammar is not None]
    grammars += [c.grammar for c in commands.values()]
    for g in grammars:
        for r in g.rules:
            d = avps[r.key]
            g.table[int_key(*r.key)] = (big if r.max == UNBOUNDED else r.max, d)
            if r.min > 0:
                g.required.append((int_key(*r.key), r.min, d))
    return Dictionary.build(files, avps, commands)


def _resolve(d: _Def, by_name: dict[str, AvpDef], visible: set[str], owner: dict[str, str]) -> Grammar:
    """Resolve a definition's names; it may use AVPs of its own file and the
    files it inherits from (`visible`), never of unrelated or later files."""
    rules: list[Rule] = []
    allows_any = False
    any_min, any_max = 0, 1 << 62
    seen: set[str] = set()
    for qmin, star, qmax, opener, name, where in d.elements:
        kind = _KIND[opener]
        if star:
            lo = int(qmin) if qmin else (1 if kind == "required" else 0)
            hi = int(qmax) if qmax else UNBOUNDED
        else:
            if qmin or qmax:
                raise _fail(where, f"qualifier without '*' before {name}")
            lo = 0 if kind == "optional" else 1
            hi = 1
        if kind == "fixed" and (lo, hi) != (1, 1):
            raise _fail(where, f"fixed element < {name} > cannot be qualified")
        if hi != UNBOUNDED and hi < lo:
            raise _fail(where, f"{name}: maximum {hi} below minimum {lo}")
        if name == "AVP":
            if kind == "fixed":
                raise _fail(where, "< AVP > has no meaning: use n*m [ AVP ] or n* { AVP }")
            if allows_any:
                raise _fail(where, f"AVP appears twice in {d.name}")
            allows_any = True
            any_min, any_max = lo, (1 << 62 if hi == UNBOUNDED else hi)
            continue
        if name in seen:
            raise _fail(where, f"{name} appears twice in {d.name}")
        seen.add(name)
        a = by_name.get(name)
        if a is None:
            raise _fail(where, f"{d.name} names {name}, which no loaded file defines")
        if owner[name] not in visible:
            raise _fail(where, f"{d.name} names {name} of {owner[name]}, which this file does not inherit")
        rules.append(Rule(name, kind, lo, hi, a.key))
    return Grammar(tuple(rules), allows_any, {r.key: r for r in rules}, any_min, any_max)


def _grouped_header(d: _Def, by_name: dict[str, AvpDef]) -> AvpDef:
    words = d.header.replace(",", " ").split()
    if not 1 <= len(words) <= 2:
        raise _fail(d.where, f"AVP Header must be 'code [vendor]', got {d.header!r}")
    code = _uint(words[0], 32, d.where, "AVP code")
    vendor = _uint(words[1], 32, d.where, "Vendor-Id") if len(words) == 2 else 0
    a = by_name.get(d.name)
    if a is None:
        raise _fail(d.where, f"grouped {d.name} is not in any @avp_types")
    if (a.code, a.vendor) != (code, vendor):
        raise _fail(d.where, f"{d.name} header says {code}/{vendor}, @avp_types says {a.code}/{a.vendor}")
    if a.type is not DataType.Grouped:
        raise _fail(d.where, f"{d.name} has a grammar but is {a.type.value}")
    return a


def _command_header(d: _Def, grammar: Grammar) -> CommandDef:
    parts = [p.strip() for p in d.header.split(",")]
    code = _uint(parts[0], 24, d.where, "command code")
    request = proxiable = False
    app = None
    for p in parts[1:]:
        if p == "REQ":
            request = True
        elif p == "PXY":
            proxiable = True
        elif _DIGITS.fullmatch(p) and app is None:
            app = _uint(p, 32, d.where, "Application-Id")
        else:
            raise _fail(d.where, f"unknown header item {p!r}")
    return CommandDef(d.name, code, request, proxiable, app, grammar, d.where)


def default_directory() -> str:
    """`dictionaries/` beside the package (source tree) or installed with it."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(here, "..", "..", "dictionaries"),
        os.path.join(here, "..", "dictionaries"),
        os.path.join(sys.prefix, "share", "ocs", "dictionaries"),
    ):
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    raise DictionaryError(f"no dictionaries/ folder found near {here}")


def load_directory(directory: str | None = None) -> Dictionary:
    directory = directory or default_directory()
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise DictionaryError(f"{directory}: {e.strerror or e}") from None
    paths = sorted(os.path.join(directory, n) for n in names if n.endswith(".dict"))
    if not paths:
        raise DictionaryError(f"{directory}: no .dict files")
    return load_files(paths)
