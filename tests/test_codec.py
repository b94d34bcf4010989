"""Data types, AVP structure errors and grammar checks (pure, no sockets)."""

import datetime as dt
import ipaddress
import struct

import pytest

from ocs.diameter.avp import Avp, decode_avps, make_avp
from ocs.diameter.datatypes import ValueProblem, time_decode, time_encode, address_decode, address_encode
from ocs.diameter.grammar import check_message, first_error
from ocs.diameter.message import decode_message, request

from wire_samples import sample

UTC = dt.timezone.utc


@pytest.mark.parametrize("when,ntp", [
    (dt.datetime(1970, 1, 1, tzinfo=UTC), 2_208_988_800),
    (dt.datetime(2026, 11, 25, 6, 0, tzinfo=UTC), 0xEEB0F7E0),
    (dt.datetime(2036, 2, 7, 6, 28, 15, tzinfo=UTC), 0xFFFFFFFF),
    # RFC 2030 era 1: MSB clear counts from 2036-02-07T06:28:16Z
    (dt.datetime(2036, 2, 7, 6, 28, 16, tzinfo=UTC), 0),
    # 2040-01-01 is Unix 2_208_988_800; NTP era 1 value = that + 2_208_988_800 - 2**32
    (dt.datetime(2040, 1, 1, tzinfo=UTC), 123_010_304),
])
def test_time_ntp_eras(when, ntp):
    assert time_encode(when) == struct.pack(">I", ntp)
    assert time_decode(struct.pack(">I", ntp)) == when


def test_time_rejects_naive_and_bad_length():
    with pytest.raises(ValueError):
        time_encode(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueProblem) as e:
        time_decode(b"\0\0\0")
    assert e.value.result_code == 5014


@pytest.mark.parametrize("value,wire", [
    (ipaddress.ip_address("192.0.2.1"), "0001c0000201"),
    (ipaddress.ip_address("2001:db8::1"), "000220010db8000000000000000000000001"),
    ((8, b"\x01\x02"), "00080102"),          # another IANA family stays raw
])
def test_address(value, wire):
    assert address_encode(value).hex() == wire
    assert address_decode(bytes.fromhex(wire)) == value


@pytest.mark.parametrize("wire,code", [("0001c00002", 5004), ("00", 5014), ("0002c0000201", 5004)])
def test_address_errors(wire, code):
    with pytest.raises(ValueProblem) as e:
        address_decode(bytes.fromhex(wire))
    assert e.value.result_code == code


def test_vendor_avp_and_padding(dictionary):
    a = make_avp(dictionary, "Called-Station-Id", "internet1")          # 9 octets: 3 of padding
    wire = a.encode()
    assert len(wire) == 20 and wire[-3:] == b"\0\0\0"
    assert struct.unpack(">I", wire[4:8])[0] & 0xFFFFFF == 17
    v = make_avp(dictionary, "Volume-Quota-Threshold", 5)
    assert v.encode().hex() == "00000365c0000010000028af00000005"
    back = decode_avps(wire + v.encode(), 0, len(wire) + 16, dictionary)
    assert [(x.name, x.value) for x in back] == [("Called-Station-Id", "internet1"),
                                                  ("Volume-Quota-Threshold", 5)]


def test_unknown_avp_kept_and_reencoded(dictionary):
    raw = bytes.fromhex("0000fff180000011000030390102030405000000")   # vendor 12345, no M
    avps = decode_avps(raw, 0, len(raw), dictionary)
    assert avps[0].defn is None and avps[0].vendor == 12345 and avps[0].value == b"\x01\x02\x03\x04\x05"
    assert avps[0].encode() == raw


def ccr(dictionary, extra=(), drop=()):
    base = [("Session-Id", "pgw;1;1"), ("Origin-Host", "pgw"), ("Origin-Realm", "example.net"),
            ("Destination-Realm", "example.net"), ("Auth-Application-Id", 4),
            ("Service-Context-Id", "32251@3gpp.org"), ("CC-Request-Type", 1), ("CC-Request-Number", 0)]
    return request(dictionary, "Credit-Control-Request",
                   [i for i in base if i[0] not in drop] + list(extra))


def errors_of(dictionary, wire: bytes):
    msg, errors = decode_message(wire, dictionary)
    return first_error(errors, msg)


def test_valid_ccr_has_no_error(dictionary):
    assert errors_of(dictionary, ccr(dictionary).encode()) is None


def test_missing_required_avp_5005(dictionary):
    err = errors_of(dictionary, ccr(dictionary, drop=("CC-Request-Number",)).encode())
    assert err.result_code == 5005
    # example AVP: CC-Request-Number (415) header with a zeroed Unsigned32
    assert err.failed_avp.hex() == "0000019f4000000c00000000"


def test_too_many_5009_names_first_excess(dictionary):
    err = errors_of(dictionary, ccr(dictionary, extra=[("CC-Request-Type", 2)]).encode())
    assert err.result_code == 5009
    assert err.failed_avp == make_avp(dictionary, "CC-Request-Type", 2).encode()


def test_unknown_mandatory_avp_5001(dictionary):
    wire = ccr(dictionary).encode()
    unknown = bytes.fromhex("0000fff1400000090a000000")     # code 65521, M bit, 1 octet
    wire = wire[:1] + (len(wire) + 12).to_bytes(3, "big") + wire[4:] + unknown
    err = errors_of(dictionary, wire)
    assert err.result_code == 5001 and err.failed_avp == unknown


def test_unknown_optional_avp_ignored(dictionary):
    wire = ccr(dictionary).encode()
    unknown = bytes.fromhex("0000fff1000000090a000000")
    wire = wire[:1] + (len(wire) + 12).to_bytes(3, "big") + wire[4:] + unknown
    assert errors_of(dictionary, wire) is None


def test_bad_avp_length_5014(dictionary):
    wire = bytearray(ccr(dictionary).encode())
    # the last AVP is CC-Request-Number: claim 40 octets where 12 remain
    wire[-12 + 5:-12 + 8] = (40).to_bytes(3, "big")
    err = errors_of(dictionary, bytes(wire))
    assert err.result_code == 5014
    assert err.failed_avp[:4] == (415).to_bytes(4, "big")


def test_bad_fixed_size_value_5014(dictionary):
    bad = Avp(415, 0x40, 0, b"\0\0\0\0\0", dictionary.avp("CC-Request-Number"), dictionary)
    msg = ccr(dictionary, drop=("CC-Request-Number",))
    msg.avps.append(bad)
    err = errors_of(dictionary, msg.encode())
    assert err.result_code == 5014


def test_undefined_enum_value_with_m_bit_5004(dictionary):
    msg = ccr(dictionary, drop=("CC-Request-Type",), extra=[("CC-Request-Type", 9)])
    err = errors_of(dictionary, msg.encode())
    assert err.result_code == 5004


def test_invalid_utf8_5004(dictionary):
    msg = ccr(dictionary, drop=("Service-Context-Id",))
    d = dictionary.avp("Service-Context-Id")
    msg.avps.append(Avp(d.code, 0x40, 0, b"\xff\xfe", d, dictionary))
    assert errors_of(dictionary, msg.encode()).result_code == 5004


def test_avp_not_allowed_5008(dictionary):
    # Unit-Value's grammar is closed (no "* [ AVP ]"): a known AVP there is not allowed
    uv = make_avp(dictionary, "Unit-Value", [("Value-Digits", 5), ("Rating-Group", 1)])
    msg = ccr(dictionary, extra=[("Multiple-Services-Credit-Control", [
        ("Granted-Service-Unit", [("CC-Money", [uv])])])])
    err = errors_of(dictionary, msg.encode())
    assert err.result_code == 5008
    assert err.failed_avp == make_avp(dictionary, "Rating-Group", 1).encode()


def test_error_inside_grouped_is_found(dictionary):
    msg = ccr(dictionary, extra=[("Subscription-Id", [("Subscription-Id-Type", 0)])])
    err = errors_of(dictionary, msg.encode())
    assert err.result_code == 5005
    assert err.failed_avp[:4] == (444).to_bytes(4, "big")       # Subscription-Id-Data


def test_check_message_on_unknown_command_is_none(dictionary):
    msg, errors = decode_message(sample("DWR")[:5] + b"\x80\x00\xff\xf0" + sample("DWR")[9:], dictionary)
    assert errors == [] and check_message(msg) is None


def test_stray_octets_inside_grouped_5014(dictionary):
    # Subscription-Id whose payload ends with 4 stray octets, followed by more AVPs:
    # the stray octets must not be read together with the next AVP's header
    sub = make_avp(dictionary, "Subscription-Id", [("Subscription-Id-Type", 0), ("Subscription-Id-Data", "4917")])
    payload = sub.data + b"\x00\x00\x01\x07"
    header = (443).to_bytes(4, "big") + bytes([0x40]) + (8 + len(payload)).to_bytes(3, "big")
    msg = ccr(dictionary)
    wire = msg.encode()
    body = header + payload
    wire = wire[:1] + (len(wire) + len(body)).to_bytes(3, "big") + wire[4:] + body
    err = errors_of(dictionary, wire)
    assert err is not None and err.result_code == 5014


def test_decode_keeps_avps_after_an_error(dictionary):
    # the first error is reported, and the message is still fully decoded for the answer
    msg = ccr(dictionary, extra=[("CC-Request-Type", 2), ("User-Name", "alice")])
    decoded, errors = decode_message(msg.encode(), dictionary)
    assert [e.result_code for e in errors] == [5009]
    assert decoded.get("User-Name") == "alice" and decoded.get("Session-Id") == "pgw;1;1"
