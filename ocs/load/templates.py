"""CCR templates of the load generator: per connection and request type one
Credit-Control-Request encoded with the ocs codec at start-up (`build_templates`),
with the offsets of the values patched per request (`CcrTemplate`: Hop-by-Hop and
End-to-End ids, the session counter at the end of the Session-Id,
CC-Request-Number, the subscriber digits), each proved by a patch and a decode
with the full grammar check (`verify_template`).
"""

from __future__ import annotations

from ..diameter.dictionary import Dictionary
from ..diameter.message import Message, decode_message, request
from .common import (
    _IDS, _U32, AVP_CC_REQUEST_NUMBER, AVP_SESSION_ID, AVP_SUBSCRIPTION_ID,
    AVP_SUBSCRIPTION_ID_DATA, CC_REQUEST_TYPE, K_E, K_I, K_T, K_U, KINDS, SESSION_DIGITS,
    LoadOptions, _walk)


class CcrTemplate:
    """One encoded CCR with the offsets of the values patched per request."""

    __slots__ = ("kind", "data", "sid_off", "num_off", "sub_off", "sub_digits", "session_id_head",
                 "subscription_head")

    def __init__(self, kind: int, msg: Message, session_id_head: str, subscription_head: str,
                 sub_digits: int):
        self.kind = kind
        self.data = msg.encode()
        self.sub_digits = sub_digits
        self.session_id_head = session_id_head
        self.subscription_head = subscription_head
        sid = num = sub = None
        data = self.data
        for code, vendor, off, length in _walk(data, 20, len(data)):
            if vendor:
                continue
            if code == AVP_SESSION_ID:
                sid = off + length - SESSION_DIGITS
            elif code == AVP_CC_REQUEST_NUMBER:
                num = off
            elif code == AVP_SUBSCRIPTION_ID:
                for c2, v2, off2, len2 in _walk(data, off, off + length):
                    if c2 == AVP_SUBSCRIPTION_ID_DATA and not v2:
                        sub = off2 + len2 - sub_digits
        if sid is None or num is None or sub is None:
            raise ValueError("template without Session-Id, CC-Request-Number or Subscription-Id-Data")
        self.sid_off, self.num_off, self.sub_off = sid, num, sub

    def write(self, out: bytearray, hbh: int, e2e: int, session: int, number: int, sub: bytes) -> None:
        """Append the request with these values to out (sub: the subscriber digits)."""
        base = len(out)
        out += self.data
        _IDS.pack_into(out, base + 12, hbh, e2e)
        p = base + self.sid_off
        out[p:p + SESSION_DIGITS] = b"%012d" % session
        _U32.pack_into(out, base + self.num_off, number)
        p = base + self.sub_off
        out[p:p + self.sub_digits] = sub

    def render(self, hbh: int, e2e: int, session: int, number: int, subscriber: int) -> bytes:
        out = bytearray()
        self.write(out, hbh, e2e, session, number, b"%0*d" % (self.sub_digits, subscriber))
        return bytes(out)

    def expected(self, session: int, number: int, subscriber: int) -> tuple[str, int, str]:
        return (f"{self.session_id_head}{session:0{SESSION_DIGITS}d}", number,
                f"{self.subscription_head}{subscriber:0{self.sub_digits}d}")


def build_templates(dictionary: Dictionary, options: LoadOptions, origin_host: str,
                    stamp: int) -> list[CcrTemplate]:
    """The I, U, T and E templates of one connection, checked by a decode."""
    o = options
    sid_head = f"{origin_host};{stamp};"
    sub_head = o.subscriber_prefix
    sid = sid_head + "0" * SESSION_DIGITS
    sub = sub_head + "0" * o.subscriber_digits

    def ccr(kind: int, context: str, extra: list) -> CcrTemplate:
        avps = [("Session-Id", sid), ("Origin-Host", origin_host), ("Origin-Realm", o.origin_realm),
                ("Destination-Realm", o.destination_realm), ("Auth-Application-Id", 4),
                ("Service-Context-Id", context), ("CC-Request-Type", CC_REQUEST_TYPE[kind]),
                ("CC-Request-Number", 0),
                ("Subscription-Id", [("Subscription-Id-Type", 0), ("Subscription-Id-Data", sub)])]
        msg = request(dictionary, "Credit-Control-Request", avps + extra, application_id=4)
        return CcrTemplate(kind, msg, sid_head, sub_head, o.subscriber_digits)

    usu = ("Used-Service-Unit", [("CC-Total-Octets", o.octets)])
    rg = ("Rating-Group", o.rating_group)
    templates = [
        ccr(K_I, "32251@3gpp.org", [
            ("Multiple-Services-Indicator", 1),
            ("Multiple-Services-Credit-Control", [("Requested-Service-Unit", []), rg])]),
        ccr(K_U, "32251@3gpp.org", [
            ("Multiple-Services-Credit-Control", [("Requested-Service-Unit", []), usu, rg])]),
        ccr(K_T, "32251@3gpp.org", [
            ("Termination-Cause", 1),
            ("Multiple-Services-Credit-Control", [usu, rg])]),
        ccr(K_E, "32274@3gpp.org", [
            ("Requested-Action", 0),
            ("Requested-Service-Unit", [("CC-Service-Specific-Units", 1)])]),
    ]
    for t in templates:
        verify_template(dictionary, t, options)
    return templates


def verify_template(dictionary: Dictionary, t: CcrTemplate, options: LoadOptions) -> None:
    """Patch the template with sample values and decode it with the grammar check."""
    top = 10 ** options.subscriber_digits - 1
    for session, number, subscriber in ((987654321012, 7, min(top, 1234567)), (1, 0, 0)):
        data = t.render(0x11223344, 0x55667788, session, number, subscriber)
        msg, errors = decode_message(data, dictionary, check=True)
        if errors:
            raise ValueError(f"CCR-{KINDS[t.kind]} template does not decode: {errors[0]}")
        sub = msg.find("Subscription-Id")
        got = (msg.get("Session-Id"), msg.get("CC-Request-Number"),
               sub.get("Subscription-Id-Data") if sub is not None else None)
        if got != t.expected(session, number, subscriber) or (msg.hop_by_hop, msg.end_to_end) != (
                0x11223344, 0x55667788) or msg.get("CC-Request-Type") != CC_REQUEST_TYPE[t.kind]:
            raise ValueError(f"CCR-{KINDS[t.kind]} template patched wrong: {got}")
