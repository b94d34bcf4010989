"""Capabilities exchange: CER/CEA content and the common-application rule.

RFC 6733 §5.3 and §6.8-6.11; RFC 8506 §1.3:
- common applications = ours ∩ (every Auth-Application-Id, Acct-Application-Id
  and those inside Vendor-Specific-Application-Id of the CER); the Vendor-Id
  inside VSAI does not take part. A peer advertising Relay (0xFFFFFFFF) has
  every application. None in common -> CEA 5010, then disconnect.
- a credit-control node advertises Auth-Application-Id 4 in CER and CEA.
- Supported-Vendor-Id is never 0; Host-IP-Address: one per local address.
"""

from __future__ import annotations

import ipaddress

import attrs

from .dictionary import Dictionary
from .events import PeerIdentity
from .answers import failed_avp as failed_avp_of
from .decoder import example_avp
from .errors import AvpError
from .message import FLAG_P, FLAG_R, Message, request

RELAY_APPLICATION_ID = 0xFFFFFFFF
CREDIT_CONTROL_APPLICATION_ID = 4
VENDOR_3GPP = 10415


@attrs.frozen
class LocalPeer:
    """Our own identity and what we advertise."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple = (ipaddress.ip_address("127.0.0.1"),)
    vendor_id: int = 0
    product_name: str = "ocs"
    firmware_revision: int | None = 1
    origin_state_id: int | None = None
    auth_application_ids: tuple = (CREDIT_CONTROL_APPLICATION_ID,)
    acct_application_ids: tuple = ()
    supported_vendor_ids: tuple = (VENDOR_3GPP,)
    served_realms: tuple = ()          # realms answered locally besides origin_realm

    def serves_realm(self, realm: str) -> bool:
        realm = realm.lower()
        return realm == self.origin_realm.lower() or any(realm == r.lower() for r in self.served_realms)

    def application_ids(self) -> frozenset:
        return frozenset(self.auth_application_ids) | frozenset(self.acct_application_ids)


def _identity_avps(local: LocalPeer) -> list:
    items: list = [("Origin-Host", local.origin_host), ("Origin-Realm", local.origin_realm)]
    items += [("Host-IP-Address", a) for a in local.host_ip_addresses]
    items += [("Vendor-Id", local.vendor_id), ("Product-Name", local.product_name)]
    if local.origin_state_id is not None:
        items.append(("Origin-State-Id", local.origin_state_id))
    items += [("Supported-Vendor-Id", v) for v in local.supported_vendor_ids]
    items += [("Auth-Application-Id", a) for a in local.auth_application_ids]
    items += [("Acct-Application-Id", a) for a in local.acct_application_ids]
    return items


def build_cer(local: LocalPeer, dictionary: Dictionary) -> Message:
    items = _identity_avps(local)
    if local.firmware_revision is not None:
        items.append(("Firmware-Revision", local.firmware_revision))
    return request(dictionary, "Capabilities-Exchange-Request", items)


def build_cea(local: LocalPeer, cer: Message, result_code: int, error: bool = False,
              failed_avp: bytes | None = None, error_message: str | None = None) -> Message:
    cea = cer.answer(error=error)
    cea.flags &= ~FLAG_P                   # CEA is never proxiable, whatever the CER said
    cea.add("Result-Code", result_code)
    items = _identity_avps(local)
    if error:
        # an E-bit answer follows the generic answer-message grammar (§7.2)
        items = [i for i in items if i[0] in ("Origin-Host", "Origin-Realm", "Origin-State-Id")]
    elif local.firmware_revision is not None:
        items.append(("Firmware-Revision", local.firmware_revision))
    cea.extend(items)
    if error_message:
        cea.add("Error-Message", error_message)
    fa = failed_avp_of(cer, failed_avp)
    if fa is not None:
        cea.avps.append(fa)
    return cea


def vendor_specific_application_error(msg: Message) -> AvpError | None:
    """RFC 6733 §6.11: a Vendor-Specific-Application-Id holds exactly one of
    Auth-Application-Id and Acct-Application-Id: neither -> 5005, both -> 5009."""
    d = msg.dictionary
    for vsai in msg.find_all("Vendor-Specific-Application-Id"):
        ids = vsai.find_all("Auth-Application-Id") + vsai.find_all("Acct-Application-Id")
        if not ids:
            examples = example_avp(d.avp("Auth-Application-Id")) + example_avp(d.avp("Acct-Application-Id"))
            return AvpError(5005, examples, "Vendor-Specific-Application-Id without an application id")
        if len(ids) > 1:
            return AvpError(5009, ids[1].encode(),
                            "Vendor-Specific-Application-Id with more than one application id")
    return None


def peer_identity(msg: Message, local: LocalPeer) -> PeerIdentity:
    """Read a CER or CEA; compute the applications we have in common."""
    auth = {a.value for a in msg.find_all("Auth-Application-Id")}
    acct = {a.value for a in msg.find_all("Acct-Application-Id")}
    for vsai in msg.find_all("Vendor-Specific-Application-Id"):
        auth.update(a.value for a in vsai.find_all("Auth-Application-Id"))
        acct.update(a.value for a in vsai.find_all("Acct-Application-Id"))
    theirs = auth | acct
    ours = local.application_ids()
    common = ours if RELAY_APPLICATION_ID in theirs else ours & theirs
    state = msg.find("Origin-State-Id")
    return PeerIdentity(
        origin_host=msg.get("Origin-Host", ""),
        origin_realm=msg.get("Origin-Realm", ""),
        host_ip_addresses=tuple(a.value for a in msg.find_all("Host-IP-Address")),
        vendor_id=msg.get("Vendor-Id", 0),
        product_name=msg.get("Product-Name", ""),
        origin_state_id=None if state is None else state.value,
        auth_application_ids=frozenset(auth),
        acct_application_ids=frozenset(acct),
        supported_vendor_ids=frozenset(a.value for a in msg.find_all("Supported-Vendor-Id")),
        common_application_ids=frozenset(common),
    )


def is_cer(msg: Message) -> bool:
    return msg.code == 257 and bool(msg.flags & FLAG_R)
