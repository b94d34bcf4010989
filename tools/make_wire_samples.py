#!/usr/bin/env python3
"""Regenerate the hex of tests/wire_samples.py from the message definitions below.

Run after a deliberate change to a sample; then check the new bytes with an
independent decoder (the tests run python-diameter on them; `tshark` or
`ocs decode` for a look). The expected values in wire_samples.py are not
touched: they are what the tests demand of the decoder.
"""
import datetime as dt
import os
import re
import sys
import textwrap

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from ocs.diameter.dictload import load_directory  # noqa: E402
from ocs.diameter.message import request  # noqa: E402

d = load_directory()
HOST = [("Origin-Host", "ocs.example.net"), ("Origin-Realm", "example.net")]


def ccr(kind, number, mscc, extra=()):
    return request(d, "Credit-Control-Request", [
        ("Session-Id", "pgw.example.net;1096298391;1"), ("Origin-Host", "pgw.example.net"),
        ("Origin-Realm", "example.net"), ("Destination-Realm", "example.net"),
        ("Auth-Application-Id", 4), ("Service-Context-Id", "32251@3gpp.org"),
        ("CC-Request-Type", kind), ("CC-Request-Number", number),
        ("Event-Timestamp", dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.timezone.utc)),
        ("Subscription-Id", [("Subscription-Id-Type", "END_USER_E164"), ("Subscription-Id-Data", "491700000001")]),
        ("Subscription-Id", [("Subscription-Id-Type", "END_USER_IMSI"), ("Subscription-Id-Data", "262010000000001")]),
        ("Multiple-Services-Indicator", "MULTIPLE_SERVICES_SUPPORTED"),
        ("Multiple-Services-Credit-Control", mscc),
        ("Service-Information", [("PS-Information", [
            ("3GPP-Charging-Id", 0x0A0B0C0D), ("Called-Station-Id", "internet"), ("3GPP-RAT-Type", b"\x06")])]),
        *extra], hop_by_hop=0x100 + number, end_to_end=0x200 + number)


def messages():
    cer = request(d, "Capabilities-Exchange-Request", [
        ("Origin-Host", "pgw.example.net"), ("Origin-Realm", "example.net"), ("Host-IP-Address", "192.0.2.1"),
        ("Host-IP-Address", "2001:db8::1"), ("Vendor-Id", 10415), ("Product-Name", "pgw"),
        ("Origin-State-Id", 7), ("Supported-Vendor-Id", 10415), ("Auth-Application-Id", 4),
        ("Vendor-Specific-Application-Id", [("Vendor-Id", 10415), ("Auth-Application-Id", 4)]),
        ("Firmware-Revision", 3)], hop_by_hop=0x11111111, end_to_end=0x22222222)
    cea = cer.answer(2001).extend(HOST + [
        ("Host-IP-Address", "127.0.0.1"), ("Vendor-Id", 0), ("Product-Name", "ocs"),
        ("Supported-Vendor-Id", 10415), ("Auth-Application-Id", 4)])
    dwr = request(d, "Device-Watchdog-Request", [("Origin-Host", "pgw.example.net"),
                  ("Origin-Realm", "example.net"), ("Origin-State-Id", 7)], hop_by_hop=1, end_to_end=2)
    dpr = request(d, "Disconnect-Peer-Request", [("Origin-Host", "pgw.example.net"),
                  ("Origin-Realm", "example.net"), ("Disconnect-Cause", "REBOOTING")], hop_by_hop=3, end_to_end=4)
    ccr_u = ccr(2, 1, [("Requested-Service-Unit", []), ("Used-Service-Unit", [
        ("Reporting-Reason", "QUOTA_EXHAUSTED"), ("CC-Total-Octets", 1048576),
        ("CC-Input-Octets", 262144), ("CC-Output-Octets", 786432)]),
        ("Rating-Group", 10), ("Service-Identifier", 1)])
    cca = ccr_u.answer(2001).extend(HOST + [
        ("Auth-Application-Id", 4), ("CC-Request-Type", 2), ("CC-Request-Number", 1),
        ("Multiple-Services-Credit-Control", [
            ("Granted-Service-Unit", [("CC-Total-Octets", 1048576)]), ("Rating-Group", 10),
            ("Validity-Time", 600), ("Result-Code", 2001), ("Volume-Quota-Threshold", 104857),
            ("Final-Unit-Indication", [("Final-Unit-Action", "TERMINATE")])])])
    return {
        "CER": cer, "CEA": cea, "DWR": dwr, "DWA": dwr.answer(2001).extend(HOST),
        "DPR": dpr, "DPA": dpr.answer(2001).extend(HOST),
        "CCR-I": ccr(1, 0, [("Requested-Service-Unit", []), ("Rating-Group", 10)]),
        "CCR-U": ccr_u,
        "CCR-T": ccr(3, 2, [("Used-Service-Unit", [("CC-Total-Octets", 5000), ("CC-Time", 61)]),
                            ("Rating-Group", 10), ("Reporting-Reason", "FINAL")],
                     [("Termination-Cause", "DIAMETER_LOGOUT")]),
        "CCA": cca,
    }


def main() -> None:
    path = os.path.join(ROOT, "tests", "wire_samples.py")
    src = open(path).read()
    hexes = {name: m.encode().hex() for name, m in messages().items()}

    def repl(m):
        lines = textwrap.wrap(hexes[m.group(1)], 92)
        return m.group(0).split("\n")[0] + "\n" + "\n".join(f'     "{x}"' for x in lines) + ",\n"

    src, n = re.subn(r'\("([A-Z-]+)", \(\d+, (?:True|False), \d\),\n(?:     "[0-9a-f]+"\n?)+,\n', repl, src)
    assert n == len(hexes), f"replaced {n} of {len(hexes)} samples"
    open(path, "w").write(src)
    print(f"rewrote {n} samples in {path}")


if __name__ == "__main__":
    main()
