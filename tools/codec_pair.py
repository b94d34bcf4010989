"""The two codecs the codec benchmark compares, doing the same Gy work.

`OcsCodec` and `PyDiameterCodec` each build the same CCR-UPDATE and CCA, decode
them and read the same fields; `cross_check` proves they agree before anything
is timed. Imported by tools/bench_codec.py, which puts the ocs checkout under
test on sys.path first.
"""

from __future__ import annotations

import ipaddress

from ocs.diameter.dictload import load_directory
from ocs.diameter.grammar import first_error
from ocs.diameter.message import decode_message, request

# ---------------------------------------------------------------------------------------------
# The exchange: values used by both codecs
# ---------------------------------------------------------------------------------------------

CLIENT_HOST = "pgw01.epc.mnc001.mcc001.3gppnetwork.org"
CLIENT_REALM = "epc.mnc001.mcc001.3gppnetwork.org"
SERVER_HOST = "ocs01.epc.mnc001.mcc001.3gppnetwork.org"
SERVER_REALM = "epc.mnc001.mcc001.3gppnetwork.org"
HOP_BY_HOP = 0x1A2B3C4D
END_TO_END = 0x5E6F7081

CCR = {
    "session_id": f"{CLIENT_HOST};1700000000;42;pdn-0001",
    "origin_host": CLIENT_HOST,
    "origin_realm": CLIENT_REALM,
    "destination_realm": SERVER_REALM,
    "auth_application_id": 4,
    "service_context_id": "32251@3gpp.org",
    "cc_request_type": 2,
    "cc_request_number": 1,
    "subscription_id_type": 0,                  # END_USER_E164
    "subscription_id_data": "491701234567",
    "multiple_services_indicator": 1,
    "rsu_present": True,
    "cc_total_octets": 1_048_576 + 524_288,
    "cc_input_octets": 524_288,
    "cc_output_octets": 1_048_576,
    "service_identifier": 1000,
    "rating_group": 100,
    "charging_id": 0x0BADF00D,
    "pdp_type": 0,                              # IPv4
    "pdp_address": "10.45.0.17",
    "sgsn_address": "192.0.2.10",
    "ggsn_address": "192.0.2.20",
    "imsi_mcc_mnc": "00101",
    "nsapi": b"5",
    "called_station_id": "internet",
    "selection_mode": "0",
    "sgsn_mcc_mnc": "00101",
    "rat_type": b"\x06",                        # EUTRAN
}

CCA = {
    "session_id": CCR["session_id"],
    "result_code": 2001,
    "origin_host": SERVER_HOST,
    "origin_realm": SERVER_REALM,
    "auth_application_id": 4,
    "cc_request_type": CCR["cc_request_type"],
    "cc_request_number": CCR["cc_request_number"],
    "gsu_total_octets": 10 * 1_048_576,
    "rating_group": CCR["rating_group"],
    "validity_time": 3600,
    "mscc_result_code": 2001,
    "volume_quota_threshold": 1_048_576,
}

# ---------------------------------------------------------------------------------------------
# ocs
# ---------------------------------------------------------------------------------------------


class OcsCodec:
    name = "ocs"

    def __init__(self, dictionary=None):
        # the dictionaries beside the ocs package under test (first on sys.path)
        self.d = dictionary or load_directory()

    # -- client side: build and encode the CCR ------------------------------------------------
    def encode_ccr(self, v=CCR) -> bytes:
        return request(self.d, "Credit-Control-Request", [
            ("Session-Id", v["session_id"]),
            ("Origin-Host", v["origin_host"]),
            ("Origin-Realm", v["origin_realm"]),
            ("Destination-Realm", v["destination_realm"]),
            ("Auth-Application-Id", v["auth_application_id"]),
            ("Service-Context-Id", v["service_context_id"]),
            ("CC-Request-Type", v["cc_request_type"]),
            ("CC-Request-Number", v["cc_request_number"]),
            ("Subscription-Id", {"Subscription-Id-Type": v["subscription_id_type"],
                                 "Subscription-Id-Data": v["subscription_id_data"]}),
            ("Multiple-Services-Indicator", v["multiple_services_indicator"]),
            ("Multiple-Services-Credit-Control", [
                # {} not []: an empty list would mean "no instance" to build_children
                ("Requested-Service-Unit", {}),
                ("Used-Service-Unit", {"CC-Total-Octets": v["cc_total_octets"],
                                       "CC-Input-Octets": v["cc_input_octets"],
                                       "CC-Output-Octets": v["cc_output_octets"]}),
                ("Service-Identifier", v["service_identifier"]),
                ("Rating-Group", v["rating_group"]),
            ]),
            ("Service-Information", {"PS-Information": {
                "3GPP-Charging-Id": v["charging_id"],
                "3GPP-PDP-Type": v["pdp_type"],
                "PDP-Address": v["pdp_address"],
                "SGSN-Address": v["sgsn_address"],
                "GGSN-Address": v["ggsn_address"],
                "3GPP-IMSI-MCC-MNC": v["imsi_mcc_mnc"],
                "3GPP-NSAPI": v["nsapi"],
                "Called-Station-Id": v["called_station_id"],
                "3GPP-Selection-Mode": v["selection_mode"],
                "3GPP-SGSN-MCC-MNC": v["sgsn_mcc_mnc"],
                "3GPP-RAT-Type": v["rat_type"],
            }}),
        ], hop_by_hop=HOP_BY_HOP, end_to_end=END_TO_END).encode()

    # -- server side: decode, check, read what rating needs -----------------------------------
    def decode_ccr(self, data: bytes, check: bool = True):
        msg, errors = decode_message(data, self.d, check=check)
        err = first_error(errors, msg)
        if err is not None:
            raise ValueError(f"CCR rejected: {err}")
        sdata = None
        for sub in msg.find_all("Subscription-Id"):
            if sub.get("Subscription-Id-Type") == 0:
                sdata = sub.get("Subscription-Id-Data")
                break
        mscc = msg.find("Multiple-Services-Credit-Control")
        usu = mscc.find("Used-Service-Unit")
        return msg, (msg.get("Session-Id"), msg.get("CC-Request-Type"),
                     msg.get("CC-Request-Number"), sdata, mscc.get("Rating-Group"),
                     usu.get("CC-Total-Octets"), usu.get("CC-Input-Octets"),
                     usu.get("CC-Output-Octets"))

    def encode_cca(self, req, fields, v=CCA) -> bytes:
        _sid, rtype, rnum, _sdata, rg = fields[:5]
        ans = req.answer(v["result_code"])
        ans.add("Origin-Host", v["origin_host"])
        ans.add("Origin-Realm", v["origin_realm"])
        ans.add("Auth-Application-Id", v["auth_application_id"])
        ans.add("CC-Request-Type", rtype)
        ans.add("CC-Request-Number", rnum)
        ans.add("Multiple-Services-Credit-Control", {
            "Granted-Service-Unit": {"CC-Total-Octets": v["gsu_total_octets"]},
            "Rating-Group": rg,
            "Validity-Time": v["validity_time"],
            "Result-Code": v["mscc_result_code"],
            "Volume-Quota-Threshold": v["volume_quota_threshold"],
        })
        return ans.encode()

    def round_trip(self, data: bytes) -> bytes:
        req, fields = self.decode_ccr(data)
        return self.encode_cca(req, fields)

    def round_trip_unchecked(self, data: bytes) -> bytes:
        """The same without the grammar check: the work python-diameter does."""
        req, fields = self.decode_ccr(data, check=False)
        return self.encode_cca(req, fields)

    # -- client side: decode the CCA ----------------------------------------------------------
    def decode_cca(self, data: bytes):
        msg, errors = decode_message(data, self.d)
        err = first_error(errors, msg)
        if err is not None:
            raise ValueError(f"CCA rejected: {err}")
        mscc = msg.find("Multiple-Services-Credit-Control")
        return (msg.get("Session-Id"), msg.get("Result-Code"), msg.get("CC-Request-Number"),
                mscc.get("Rating-Group"), mscc.get("Result-Code"),
                mscc.find("Granted-Service-Unit").get("CC-Total-Octets"),
                mscc.get("Validity-Time"), mscc.get("Volume-Quota-Threshold"))

    # -- full extraction, for the cross-check only --------------------------------------------
    def ccr_values(self, data: bytes) -> dict:
        msg, errors = decode_message(data, self.d)
        err = first_error(errors, msg)
        if err is not None:
            raise ValueError(f"ocs rejects the CCR: {err}")
        sub = msg.find("Subscription-Id")
        mscc = msg.find("Multiple-Services-Credit-Control")
        usu = mscc.find("Used-Service-Unit")
        ps = msg.find("Service-Information").find("PS-Information")
        return {
            "session_id": msg.get("Session-Id"),
            "origin_host": msg.get("Origin-Host"),
            "origin_realm": msg.get("Origin-Realm"),
            "destination_realm": msg.get("Destination-Realm"),
            "auth_application_id": msg.get("Auth-Application-Id"),
            "service_context_id": msg.get("Service-Context-Id"),
            "cc_request_type": msg.get("CC-Request-Type"),
            "cc_request_number": msg.get("CC-Request-Number"),
            "subscription_id_type": sub.get("Subscription-Id-Type"),
            "subscription_id_data": sub.get("Subscription-Id-Data"),
            "multiple_services_indicator": msg.get("Multiple-Services-Indicator"),
            "rsu_present": mscc.find("Requested-Service-Unit") is not None,
            "cc_total_octets": usu.get("CC-Total-Octets"),
            "cc_input_octets": usu.get("CC-Input-Octets"),
            "cc_output_octets": usu.get("CC-Output-Octets"),
            "service_identifier": mscc.get("Service-Identifier"),
            "rating_group": mscc.get("Rating-Group"),
            "charging_id": ps.get("3GPP-Charging-Id"),
            "pdp_type": ps.get("3GPP-PDP-Type"),
            "pdp_address": str(ps.get("PDP-Address")),
            "sgsn_address": str(ps.get("SGSN-Address")),
            "ggsn_address": str(ps.get("GGSN-Address")),
            "imsi_mcc_mnc": ps.get("3GPP-IMSI-MCC-MNC"),
            "nsapi": ps.get("3GPP-NSAPI"),
            "called_station_id": ps.get("Called-Station-Id"),
            "selection_mode": ps.get("3GPP-Selection-Mode"),
            "sgsn_mcc_mnc": ps.get("3GPP-SGSN-MCC-MNC"),
            "rat_type": ps.get("3GPP-RAT-Type"),
        }

    def cca_values(self, data: bytes) -> dict:
        msg, errors = decode_message(data, self.d)
        err = first_error(errors, msg)
        if err is not None:
            raise ValueError(f"ocs rejects the CCA: {err}")
        mscc = msg.find("Multiple-Services-Credit-Control")
        return {
            "session_id": msg.get("Session-Id"),
            "result_code": msg.get("Result-Code"),
            "origin_host": msg.get("Origin-Host"),
            "origin_realm": msg.get("Origin-Realm"),
            "auth_application_id": msg.get("Auth-Application-Id"),
            "cc_request_type": msg.get("CC-Request-Type"),
            "cc_request_number": msg.get("CC-Request-Number"),
            "gsu_total_octets": mscc.find("Granted-Service-Unit").get("CC-Total-Octets"),
            "rating_group": mscc.get("Rating-Group"),
            "validity_time": mscc.get("Validity-Time"),
            "mscc_result_code": mscc.get("Result-Code"),
            "volume_quota_threshold": mscc.get("Volume-Quota-Threshold"),
        }


# ---------------------------------------------------------------------------------------------
# python-diameter (the baseline)
# ---------------------------------------------------------------------------------------------


class PyDiameterCodec:
    name = "python-diameter"

    def __init__(self):
        from diameter.message import Message
        from diameter.message.avp.grouped import (
            GrantedServiceUnit, MultipleServicesCreditControl, PsInformation,
            RequestedServiceUnit, ServiceInformation, SubscriptionId, UsedServiceUnit,
        )
        from diameter.message.commands.credit_control import CreditControlRequest
        self.Message = Message
        self.GSU = GrantedServiceUnit
        self.RSU = RequestedServiceUnit
        self.USU = UsedServiceUnit
        self.MSCC = MultipleServicesCreditControl
        self.PS = PsInformation
        self.SI = ServiceInformation
        self.SubId = SubscriptionId
        self.CCR = CreditControlRequest
        import diameter
        self.version = getattr(diameter, "__version__", None)
        if self.version is None:
            try:
                from importlib.metadata import version
                self.version = version("python-diameter")
            except Exception:  # noqa: BLE001
                self.version = "?"

    def encode_ccr(self, v=CCR) -> bytes:
        r = self.CCR()
        r.header.hop_by_hop_identifier = HOP_BY_HOP
        r.header.end_to_end_identifier = END_TO_END
        r.session_id = v["session_id"]
        r.origin_host = v["origin_host"].encode()
        r.origin_realm = v["origin_realm"].encode()
        r.destination_realm = v["destination_realm"].encode()
        r.auth_application_id = v["auth_application_id"]
        r.service_context_id = v["service_context_id"]
        r.cc_request_type = v["cc_request_type"]
        r.cc_request_number = v["cc_request_number"]
        r.subscription_id.append(self.SubId(v["subscription_id_type"], v["subscription_id_data"]))
        r.multiple_services_indicator = v["multiple_services_indicator"]
        r.multiple_services_credit_control.append(self.MSCC(
            requested_service_unit=self.RSU(),
            used_service_unit=[self.USU(cc_total_octets=v["cc_total_octets"],
                                        cc_input_octets=v["cc_input_octets"],
                                        cc_output_octets=v["cc_output_octets"])],
            service_identifier=[v["service_identifier"]],
            rating_group=v["rating_group"]))
        r.service_information = self.SI(ps_information=self.PS(
            tgpp_charging_id=v["charging_id"].to_bytes(4, "big"),
            tgpp_pdp_type=v["pdp_type"],
            pdp_address=[v["pdp_address"]],
            sgsn_address=[v["sgsn_address"]],
            ggsn_address=[v["ggsn_address"]],
            tgpp_imsi_mcc_mnc=v["imsi_mcc_mnc"],
            tgpp_nsapi=v["nsapi"],
            called_station_id=v["called_station_id"],
            tgpp_selection_mode=v["selection_mode"],
            tgpp_sgsn_mcc_mnc=v["sgsn_mcc_mnc"],
            tgpp_rat_type=v["rat_type"]))
        return r.as_bytes()

    def decode_ccr(self, data: bytes):
        m = self.Message.from_bytes(data)
        sdata = None
        for sub in m.subscription_id:
            if sub.subscription_id_type == 0:
                sdata = sub.subscription_id_data
                break
        mscc = m.multiple_services_credit_control[0]
        usu = mscc.used_service_unit[0]
        return m, (m.session_id, m.cc_request_type, m.cc_request_number, sdata,
                   mscc.rating_group, usu.cc_total_octets, usu.cc_input_octets,
                   usu.cc_output_octets)

    def encode_cca(self, req, fields, v=CCA) -> bytes:
        sid, rtype, rnum, _sdata, rg = fields[:5]
        a = req.to_answer()
        a.session_id = sid
        a.result_code = v["result_code"]
        a.origin_host = v["origin_host"].encode()
        a.origin_realm = v["origin_realm"].encode()
        a.auth_application_id = v["auth_application_id"]
        a.cc_request_type = rtype
        a.cc_request_number = rnum
        a.multiple_services_credit_control.append(self.MSCC(
            granted_service_unit=self.GSU(cc_total_octets=v["gsu_total_octets"]),
            rating_group=rg,
            validity_time=v["validity_time"],
            result_code=v["mscc_result_code"],
            volume_quota_threshold=v["volume_quota_threshold"]))
        return a.as_bytes()

    def round_trip(self, data: bytes) -> bytes:
        req, fields = self.decode_ccr(data)
        return self.encode_cca(req, fields)

    def decode_cca(self, data: bytes):
        m = self.Message.from_bytes(data)
        mscc = m.multiple_services_credit_control[0]
        return (m.session_id, m.result_code, m.cc_request_number, mscc.rating_group,
                mscc.result_code, mscc.granted_service_unit.cc_total_octets,
                mscc.validity_time, mscc.volume_quota_threshold)

    def ccr_values(self, data: bytes) -> dict:
        m = self.Message.from_bytes(data)
        sub = m.subscription_id[0]
        mscc = m.multiple_services_credit_control[0]
        usu = mscc.used_service_unit[0]
        ps = m.service_information.ps_information

        def one(x):
            return x[0] if isinstance(x, list) and len(x) == 1 else x

        def addr(x):          # python-diameter decodes Address as (family, "text")
            x = one(x)
            return str(ipaddress.ip_address(x[1] if isinstance(x, tuple) else x))

        return {
            "session_id": m.session_id,
            "origin_host": m.origin_host.decode(),
            "origin_realm": m.origin_realm.decode(),
            "destination_realm": m.destination_realm.decode(),
            "auth_application_id": m.auth_application_id,
            "service_context_id": m.service_context_id,
            "cc_request_type": m.cc_request_type,
            "cc_request_number": m.cc_request_number,
            "subscription_id_type": sub.subscription_id_type,
            "subscription_id_data": sub.subscription_id_data,
            "multiple_services_indicator": m.multiple_services_indicator,
            "rsu_present": mscc.requested_service_unit is not None,
            "cc_total_octets": usu.cc_total_octets,
            "cc_input_octets": usu.cc_input_octets,
            "cc_output_octets": usu.cc_output_octets,
            "service_identifier": one(mscc.service_identifier),
            "rating_group": mscc.rating_group,
            "charging_id": int.from_bytes(ps.tgpp_charging_id, "big"),
            "pdp_type": ps.tgpp_pdp_type,
            "pdp_address": addr(ps.pdp_address),
            "sgsn_address": addr(ps.sgsn_address),
            "ggsn_address": addr(ps.ggsn_address),
            "imsi_mcc_mnc": ps.tgpp_imsi_mcc_mnc,
            "nsapi": ps.tgpp_nsapi,
            "called_station_id": ps.called_station_id,
            "selection_mode": ps.tgpp_selection_mode,
            "sgsn_mcc_mnc": ps.tgpp_sgsn_mcc_mnc,
            "rat_type": ps.tgpp_rat_type,
        }

    def cca_values(self, data: bytes) -> dict:
        m = self.Message.from_bytes(data)
        mscc = m.multiple_services_credit_control[0]
        return {
            "session_id": m.session_id,
            "result_code": m.result_code,
            "origin_host": m.origin_host.decode(),
            "origin_realm": m.origin_realm.decode(),
            "auth_application_id": m.auth_application_id,
            "cc_request_type": m.cc_request_type,
            "cc_request_number": m.cc_request_number,
            "gsu_total_octets": mscc.granted_service_unit.cc_total_octets,
            "rating_group": mscc.rating_group,
            "validity_time": mscc.validity_time,
            "mscc_result_code": mscc.result_code,
            "volume_quota_threshold": mscc.volume_quota_threshold,
        }


# ---------------------------------------------------------------------------------------------
# Cross-check
# ---------------------------------------------------------------------------------------------


def _diff(expected: dict, got: dict) -> list[str]:
    return [f"{k}: expected {expected[k]!r}, got {got.get(k)!r}"
            for k in expected if got.get(k) != expected[k]]


def _avp_layout(data: bytes, start: int = 20, end: int | None = None, depth: int = 0) -> list:
    """(code, flags, vendor, depth) of every AVP, descending into the ones we know are grouped,
    to explain any byte difference between the two encoders."""
    grouped = {443, 456, 437, 446, 431, 873, 874}
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        code = int.from_bytes(data[pos:pos + 4], "big")
        flags = data[pos + 4]
        length = int.from_bytes(data[pos + 5:pos + 8], "big")
        hdr = 12 if flags & 0x80 else 8
        vendor = int.from_bytes(data[pos + 8:pos + 12], "big") if hdr == 12 else 0
        out.append((code, flags, vendor, depth))
        if code in grouped:
            out.extend(_avp_layout(data, pos + hdr, pos + length, depth + 1))
        pos += (length + 3) & ~3
    return out


def cross_check(ocs: OcsCodec, pd: PyDiameterCodec, out) -> dict:
    """Each codec decodes its own and the other's CCR and CCA to the expected values."""
    ocs_ccr, pd_ccr = ocs.encode_ccr(), pd.encode_ccr()
    _, ocs_fields = ocs.decode_ccr(ocs_ccr)
    _, pd_fields = pd.decode_ccr(pd_ccr)
    ocs_cca = ocs.round_trip(ocs_ccr)
    pd_cca = pd.round_trip(pd_ccr)
    report = {"ok": True, "checks": [], "sizes": {
        "ccr": {"ocs": len(ocs_ccr), "python-diameter": len(pd_ccr)},
        "cca": {"ocs": len(ocs_cca), "python-diameter": len(pd_cca)}}}
    checks = [
        ("CCR by ocs             -> ocs", ocs.ccr_values, ocs_ccr, CCR),
        ("CCR by ocs             -> python-diameter", pd.ccr_values, ocs_ccr, CCR),
        ("CCR by python-diameter -> ocs", ocs.ccr_values, pd_ccr, CCR),
        ("CCR by python-diameter -> python-diameter", pd.ccr_values, pd_ccr, CCR),
        ("CCA by ocs             -> ocs", ocs.cca_values, ocs_cca, CCA),
        ("CCA by ocs             -> python-diameter", pd.cca_values, ocs_cca, CCA),
        ("CCA by python-diameter -> ocs", ocs.cca_values, pd_cca, CCA),
        ("CCA by python-diameter -> python-diameter", pd.cca_values, pd_cca, CCA),
    ]
    print("Cross-check (each decoder reads every field back; ocs also runs its grammar check):",
          file=out)
    for label, fn, data, expected in checks:
        try:
            problems = _diff(expected, fn(data))
        except Exception as e:  # noqa: BLE001
            problems = [f"{type(e).__name__}: {e}"]
        ok = not problems
        report["ok"] &= ok
        report["checks"].append({"check": label, "ok": ok, "problems": problems})
        print(f"  {label:<44} {'ok' if ok else 'MISMATCH'} ({len(expected)} fields)", file=out)
        for p in problems:
            print(f"      {p}", file=out)
    # the hot-path readers must agree with each other as well
    same = ocs_fields == pd_fields
    report["ok"] &= same
    print(f"  {'hot-path fields read by both codecs':<44} {'ok' if same else 'MISMATCH'}", file=out)
    if not same:
        print(f"      ocs {ocs_fields!r}\n      pd  {pd_fields!r}", file=out)
    for kind, a, b in (("CCR", ocs_ccr, pd_ccr), ("CCA", ocs_cca, pd_cca)):
        la, lb = _avp_layout(a), _avp_layout(b)
        if a == b:
            note = "byte-identical"
        elif [(x[0], x[2], x[3]) for x in la] != [(y[0], y[2], y[3]) for y in lb]:
            note = "AVP set, nesting or order differs"
        else:
            flags = [f"{x[0]}/{x[2]} 0x{x[1]:02x} vs 0x{y[1]:02x}" for x, y in zip(la, lb) if x[1] != y[1]]
            note = "same AVPs in the same order"
            if flags:
                note += "; flags (ocs vs python-diameter) differ on " + ", ".join(flags)
            if len(a) != len(b):
                note += "; payload lengths differ"
        report[f"{kind.lower()}_wire"] = note
        print(f"  {kind} wire: ocs {len(a)} octets, python-diameter {len(b)} octets: {note}", file=out)
    return report


