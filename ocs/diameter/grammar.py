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
Checking decodes every known value, so a handler reading values afterwards gets
cached values and never a decode error.
"""

from __future__ import annotations

from .avp import Avp, AvpStructureError
from .datatypes import MIN_LENGTH, ValueProblem
from .dictionary import FLAG_M, UNBOUNDED, AvpDef, DataType, Dictionary, Grammar
from .errors import AvpError
from .message import Message


def check_message(msg: Message) -> AvpError | None:
    cmd = msg.dictionary.command(msg.code, msg.is_request)
    if cmd is None:
        return None
    return check_avps(msg.avps, cmd.grammar, msg.dictionary)


def check_avps(avps: list[Avp], grammar: Grammar, dictionary: Dictionary) -> AvpError | None:
    by_key = grammar.by_key
    counts: dict[tuple[int, int], int] = {}
    others = 0
    for a in avps:
        key = (a.code, a.vendor)
        rule = by_key.get(key)
        d = a.defn
        if rule is None:
            others += 1
            if d is None:
                if a.flags & FLAG_M:
                    return AvpError(5001, a.encode(), f"unknown AVP {a.code}/{a.vendor} with the M bit")
                continue
            if not grammar.allows_any:
                return AvpError(5008, a.encode(), f"{d.name} is not allowed here")
        else:
            c = counts.get(key, 0) + 1
            counts[key] = c
            if c > rule.max != UNBOUNDED:
                return AvpError(5009, a.encode(), f"{d.name} occurs more than {rule.max} times")
        if d is not None:
            err = _check_value(a, d, dictionary)
            if err is not None:
                return err
    for rule in grammar.rules:
        if counts.get(rule.key, 0) < rule.min:
            return AvpError(5005, example_avp(dictionary.avps[rule.key]), f"missing {rule.name}")
    if others < grammar.any_min:
        return AvpError(5005, None, f"at least {grammar.any_min} AVP(s) required")
    return None


def _check_value(a: Avp, d: AvpDef, dictionary: Dictionary) -> AvpError | None:
    try:
        value = a.value
    except ValueProblem as e:
        return AvpError(e.result_code, a.encode(), f"{d.name}: {e}")
    except AvpStructureError as e:
        return AvpError(e.result_code, e.failed, f"inside {d.name}: {e}")
    if d.grammar is not None:
        return check_avps(value, d.grammar, dictionary)
    if d.enum is not None and value not in d.enum and a.flags & FLAG_M:
        return AvpError(5004, a.encode(), f"{d.name}: {value} is not a defined value")
    return None


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
