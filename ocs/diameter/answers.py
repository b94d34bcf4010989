"""Error answers (RFC 6733 §7.2, §6.2).

- 3xxx protocol errors go in an answer with the E bit, built on the generic
  `answer-message` grammar: Session-Id, Origin-Host, Origin-Realm, Result-Code,
  Error-Message, Failed-AVP, Proxy-Info.
- 4xxx/5xxx go with the E bit clear on the command's own answer grammar: we
  copy from the request each AVP that the answer grammar requires and the
  request carries (for a CCA: Auth-Application-Id, CC-Request-Type,
  CC-Request-Number), so the answer is valid for the peer's parser. When the
  dictionary has no answer grammar, the generic E-bit form is used (§7.2 allows
  it for permanent errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .avp import Avp, AvpStructureError, decode_avps
from .datatypes import ValueProblem
from .dictionary import FLAG_V
from .errors import is_protocol_error
from .message import Message

if TYPE_CHECKING:
    from .capabilities import LocalPeer

_ANSWER_SETS = frozenset({"Session-Id", "Result-Code", "Origin-Host", "Origin-Realm",
                          "Failed-AVP", "Error-Message", "Proxy-Info"})


def failed_avp(request: Message, encoded: bytes | None) -> Avp | None:
    """Failed-AVP holding the encoded offending AVP(s) (None if there are none)."""
    if not encoded:
        return None
    d = request.dictionary
    try:
        inner = decode_avps(encoded, 0, len(encoded), d)
    except AvpStructureError:
        # a header whose length is itself the error (5014): the header as received,
        # V bit and Vendor-Id included, with a zeroed payload (RFC 6733 §7.5)
        flags = encoded[4]
        vendor = int.from_bytes(encoded[8:12], "big") if flags & FLAG_V and len(encoded) >= 12 else 0
        start = 12 if vendor else 8
        inner = [Avp(int.from_bytes(encoded[:4], "big"), flags if vendor else flags & ~FLAG_V,
                     vendor, bytes(encoded[start:]), None, d)]
    if not inner:
        return None
    fa = d.avp("Failed-AVP")
    return Avp(fa.code, fa.flags, fa.vendor, b"".join(a.encode() for a in inner), fa, d, inner)


def _valid(a: Avp) -> bool:
    """Only AVPs that decode are echoed into an answer (never the bad one)."""
    try:
        a.value
    except (ValueProblem, AvpStructureError):
        return False
    return True


def error_answer(local: "LocalPeer", request: Message, result_code: int,
                 error_message: str | None = None, failed: bytes | None = None) -> Message:
    d = request.dictionary
    answer_def = d.command(request.code, False)
    protocol = is_protocol_error(result_code) or answer_def is None
    ans = request.answer(error=protocol)
    ans.add("Result-Code", result_code)
    ans.add("Origin-Host", local.origin_host)
    ans.add("Origin-Realm", local.origin_realm)
    if not protocol:
        for rule in answer_def.grammar.rules:
            if rule.min > 0 and rule.name not in _ANSWER_SETS:
                code, vendor = rule.key
                for a in request.avps:
                    if a.code == code and a.vendor == vendor:
                        if _valid(a) and a.encode() != failed:
                            ans.avps.append(a)
                        break
    if error_message:
        ans.add("Error-Message", error_message[:200])
    fa = failed_avp(request, failed)
    if fa is not None:
        ans.avps.append(fa)
    return ans


def result_code_of(data: bytes) -> int | None:
    """The Result-Code (268), or else the Experimental-Result-Code (298) inside an
    Experimental-Result, of an encoded answer; None when it has neither. A scan of
    the top-level AVP headers: for counting answers already encoded."""
    i, end = 20, min(len(data), int.from_bytes(data[1:4], "big"))
    experimental = None
    while i + 8 <= end:
        code = int.from_bytes(data[i:i + 4], "big")
        flags = data[i + 4]
        length = int.from_bytes(data[i + 5:i + 8], "big")
        head = 12 if flags & FLAG_V else 8
        if length < head or i + length > end:
            return experimental
        if code == 268 and length == head + 4 and not flags & FLAG_V:
            return int.from_bytes(data[i + head:i + head + 4], "big")
        if code == 297 and not flags & FLAG_V:
            inner = data[i + head:i + length]
            j = 0
            while j + 8 <= len(inner):
                c = int.from_bytes(inner[j:j + 4], "big")
                f, n = inner[j + 4], int.from_bytes(inner[j + 5:j + 8], "big")
                h = 12 if f & FLAG_V else 8
                if n < h or j + n > len(inner):
                    break
                if c == 298 and n == h + 4:
                    experimental = int.from_bytes(inner[j + h:j + h + 4], "big")
                j += (n + 3) & ~3
        i += (length + 3) & ~3
    return experimental
