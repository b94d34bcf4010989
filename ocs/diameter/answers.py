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

from .avp import Avp, AvpStructureError, decode_avps
from .capabilities import LocalPeer
from .errors import is_protocol_error
from .message import Message

_ANSWER_SETS = frozenset({"Session-Id", "Result-Code", "Origin-Host", "Origin-Realm",
                          "Failed-AVP", "Error-Message", "Proxy-Info"})


def failed_avp(request: Message, encoded: bytes | None) -> Avp | None:
    """Failed-AVP holding the encoded offending AVP (None if it cannot be read)."""
    if not encoded:
        return None
    d = request.dictionary
    try:
        inner = decode_avps(encoded, 0, len(encoded), d)
    except AvpStructureError:
        # a header whose length is itself the error: carry it as raw bytes
        inner = [Avp(int.from_bytes(encoded[:4], "big"), encoded[4] & 0x7F, 0, encoded[8:], None, d)]
    if not inner:
        return None
    fa = d.avp("Failed-AVP")
    data = b"".join(a.encode() for a in inner[:1])
    return Avp(fa.code, fa.flags, fa.vendor, data, fa, d, inner[:1])


def error_answer(local: LocalPeer, request: Message, result_code: int,
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
                        ans.avps.append(a)
                        break
    if error_message:
        ans.add("Error-Message", error_message[:200])
    fa = failed_avp(request, failed)
    if fa is not None:
        ans.avps.append(fa)
    return ans
