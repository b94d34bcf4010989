"""Render a decoded message as an indented AVP tree, by dictionary name.

Used by `ocs decode` / `tools/decode.py` and in test failure output. Invalid
values are shown with the problem instead of raising.
"""

from __future__ import annotations

from .avp import Avp, AvpStructureError
from .datatypes import ValueProblem
from .decoder import MAX_DEPTH
from .dictionary import DataType
from .message import Message


def render_message(msg: Message) -> str:
    flags = "".join(f for f, bit in (("R", 0x80), ("P", 0x40), ("E", 0x20), ("T", 0x10))
                    if msg.flags & bit) or "-"
    lines = [f"{msg.name} (code {msg.code}, flags {flags}, application {msg.application_id}, "
             f"hop-by-hop 0x{msg.hop_by_hop:08x}, end-to-end 0x{msg.end_to_end:08x})"]
    _avps(msg.avps, 1, lines)
    return "\n".join(lines)


def _avps(avps: list[Avp], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    if depth > MAX_DEPTH + 1:
        lines.append(f"{pad}... (nested deeper than {MAX_DEPTH})")
        return
    for a in avps:
        flags = "".join(f for f, bit in (("V", 0x80), ("M", 0x40), ("P", 0x20)) if a.flags & bit) or "-"
        head = f"{pad}{a.name} ({a.code}{'/' + str(a.vendor) if a.vendor else ''}, {flags})"
        try:
            value = a.value
        except (ValueProblem, AvpStructureError) as e:
            lines.append(f"{head}: <invalid, {e.result_code}: {e}>")
            continue
        if a.defn is not None and a.defn.type is DataType.Grouped:
            lines.append(f"{head}:")
            _avps(value, depth + 1, lines)
        elif a.defn is None:
            lines.append(f"{head}: 0x{bytes(value).hex()} (unknown AVP)")
        else:
            label = a.label
            shown = f"{value} ({label})" if label else repr(value) if isinstance(value, (str, bytes)) else str(value)
            lines.append(f"{head}: {shown}")
