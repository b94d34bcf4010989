"""Offline (post-paid) charging, `ocs rate FILE`, against LMDB in a temp dir:
exact amounts from the plan, credit limit and `unpaid`, allowances first,
idempotency, every kind of reject, and the command end to end."""

import argparse
import json
import os

import attrs

import pytest

from ocs import rate
from ocs.charging import offline
from ocs.charging import provision as prov
from ocs.charging.records import decode_balance, decode_event
from ocs.config import load_config, override
from ocs.store.lmdb import LmdbStore

MON = 1795420800                 # 2026-11-23T08:00:00Z, Monday 09:00 in the plan's UTC+1: peak
SAT = 1795852800                 # 2026-11-28T08:00:00Z, Saturday: off-peak
PLAN = {"id": "mobile", "currency": "EUR", "utc_offset_minutes": 60, "tariffs": [
    {"context": "32251@3gpp.org", "unit": "total_octets", "rating_group": 10, "price": 2,
     "per": 1048576, "rounding": 1024},
    {"context": "32251@3gpp.org", "unit": "total_octets", "rating_group": 20, "price": 4,
     "per": 1048576, "rounding": 1024},
    {"context": "32260@3gpp.org", "unit": "time", "price": 1, "per": 6, "rounding": 6,
     "bands": [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00", "price": 2}]},
    {"context": "32274@3gpp.org", "unit": "service_specific_units", "price": 9},
    {"context": "content@ocs.example.org", "unit": "service_specific_units", "price": 10,
     "free_units": 2, "tiers": [{"from_units": 5, "price": 5}]},
    {"context": "wallet@ocs.example.org", "unit": "money", "price": 1}]}
ACCOUNTS = [
    {"id": "alice", "plan": "mobile", "identities": ["e164:46700000001", "sip:alice@ims.example.org"],
     "buckets": [{"id": "main", "amount": 10000},
                 {"id": "data-1mb", "kind": "total_octets", "amount": 1048576, "priority": 10,
                  "rating_groups": [10]}]},
    {"id": "bob", "plan": "mobile", "credit_limit": 500, "identities": ["e164:46700000002"],
     "buckets": [{"id": "main", "amount": 100}]},
    {"id": "carol", "plan": "mobile", "status": "closed", "identities": ["e164:46700000003"],
     "buckets": [{"id": "main", "amount": 1000}]},
    {"id": "dave", "plan": "mobile", "status": "suspended", "identities": ["e164:46700000004"],
     "buckets": [{"id": "main", "amount": 1000}]}]
HEADER = "record_id,identity,context,rating_group,start,end,units,unit"
ALICE_CSV = [HEADER,
             f"cdr-1,e164:46700000001,32251@3gpp.org,10,{MON},{MON + 3600},3145728,total_octets",
             f"cdr-2,sip:Alice@IMS.example.org,32260@3gpp.org,,{MON},{MON + 125},125,time",
             "cdr-3,e164:46700000001,32260@3gpp.org,,2026-11-28T08:00:00Z,2026-11-28T09:02:05+01:00,125,time",
             f"cdr-4,e164:46700000001,32274@3gpp.org,,{MON},{MON},3,service_specific_units",
             f" cdr-5 , e164:46700000001 ,content@ocs.example.org,,{MON},{MON + 1},8,service_specific_units"]
# 3 MiB: 1 MiB from the allowance, 2 MiB at 2 cents = 4; 125 s rounded to 126 at peak 2/6 s = 42,
# off-peak 1/6 s = 21; 3 SMS at 9 = 27; 8 units: 2 free, 3 at 10, 3 at 5 = 45
ALICE_AMOUNTS = [("cdr-1", 4, 0), ("cdr-2", 42, 0), ("cdr-3", 21, 0), ("cdr-4", 27, 0), ("cdr-5", 45, 0)]


@pytest.fixture
def store_dir(tmp_path):
    path = str(tmp_path / "store")
    with LmdbStore(path) as st:
        st.write(lambda t: prov.load_data(t, {"plans": [PLAN], "accounts": ACCOUNTS}, 0))
    return path


def ocs_rate(store_dir, capsys, *argv):
    parser = argparse.ArgumentParser()
    rate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["rate", "--store", store_dir, *argv])
    code = rate.run(args, override(load_config(None), "store", path=args.store))
    out = capsys.readouterr()
    return code, out.out, out.err


def state(store_dir):
    """({account: {bucket: amount}}, offline_usage events)."""
    with LmdbStore(store_dir) as st, st.read() as t:
        balances = {k.decode(): {b.id: b.amount for b in decode_balance(v).buckets}
                    for k, v in t.items("balances")}
        events = [e for e in (decode_event(v) for _, v in t.items("outbox")) if e["type"] == "offline_usage"]
    return balances, events


def write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_csv_rated_exactly_and_once(store_dir, tmp_path, capsys):
    f = write(tmp_path, "usage.csv", ALICE_CSV)
    code, out, err = ocs_rate(store_dir, capsys, f)
    assert (code, err) == (0, "")
    assert out == f"rated 5, already rated 0, rejected 0 (-> {f}.rejects)\nEUR: amount 139, unpaid 0 (minor units)\n"
    balances, events = state(store_dir)
    assert [(e["record_id"], e["amount"], e["unpaid"]) for e in events] == ALICE_AMOUNTS
    assert balances["alice"] == {"main": 10000 - 139, "data-1mb": 0}
    e = events[0]
    assert {k: v for k, v in e.items() if k not in ("event_id", "recorded")} == {
        "v": 1, "type": "offline_usage", "account": "alice", "identity": "e164:46700000001",
        "session": None, "request_number": None, "request_type": None, "context": "32251@3gpp.org",
        "rating_group": 10, "service_id": None, "start": MON, "end": MON + 3600,
        "units": {"total_octets": 3145728}, "plan": "mobile",
        "rate": {"price": 2, "per": 1048576, "rounding": 1024}, "amount": 4, "currency": "EUR",
        "impacts": [["data-1mb", -1048576], ["main", -4]], "unpaid": 0,
        "balance_after": {"money": 9996, "total_octets": 0}, "record_id": "cdr-1"}
    assert events[1]["identity"] == "sip:alice@ims.example.org"
    assert events[1]["rate"] == {"price": 2, "per": 6, "rounding": 6, "band": True}
    assert (events[2]["start"], events[2]["end"], events[2]["rate"]["price"]) == (SAT, SAT + 125, 1)
    assert events[4]["rate"] == {"price": 10, "per": 1, "rounding": 1, "tiers": [[5, 5]], "free_units": 2}
    assert open(f + ".rejects").read() == ""
    # the same file again, after a crash or by mistake: nothing is charged twice
    code, out, _ = ocs_rate(store_dir, capsys, f)
    assert code == 0 and out.startswith("rated 0, already rated 5, rejected 0")
    assert state(store_dir) == (balances, events)


def _json_lines(csv_lines):
    """The CSV records as JSON objects without ids (epoch and ISO times as given)."""
    cols = HEADER.split(",")[1:]
    out = []
    for line in csv_lines[1:]:
        d = dict(zip(cols, [x.strip() for x in line.split(",")[1:]]))
        d = {k: (int(v) if k in ("rating_group", "units") else v) for k, v in d.items() if v != ""}
        out.append(json.dumps(d))
    return out


def test_jsonl_without_ids_is_the_same_record_in_any_spelling(store_dir, tmp_path, capsys):
    f = write(tmp_path, "usage.jsonl", _json_lines(ALICE_CSV))
    code, out, _ = ocs_rate(store_dir, capsys, f)
    assert code == 0 and out.startswith("rated 5, already rated 0, rejected 0")
    balances, events = state(store_dir)
    assert [(e["amount"], e["unpaid"]) for e in events] == [(a, u) for _, a, u in ALICE_AMOUNTS]
    assert all(e["record_id"].startswith("sha256:") and len(e["record_id"]) == 71 for e in events)
    # the same usage as CSV, epoch times, identities spelled otherwise, no ids: already rated
    same = ["identity,context,rating_group,start,end,units,unit",
            f"e164:46700000001,32251@3gpp.org,10,{MON},{MON + 3600},3145728,total_octets",
            f"sip:alice@ims.example.org,32260@3gpp.org,,{MON},{MON + 125},125,time",
            f"e164:46700000001,32260@3gpp.org,,{SAT},{SAT + 125},125,time"]
    code, out, _ = ocs_rate(store_dir, capsys, write(tmp_path, "again.csv", same))
    assert code == 0 and out.startswith("rated 0, already rated 3, rejected 0")
    assert state(store_dir) == (balances, events)


def test_identical_lines_without_id_are_one_record(store_dir, tmp_path, capsys):
    line = f"e164:46700000001,32274@3gpp.org,,{MON},{MON},1,service_specific_units"
    f = write(tmp_path, "sms.csv", ["identity,context,rating_group,start,end,units,unit", line, line])
    code, out, _ = ocs_rate(store_dir, capsys, f)
    assert code == 0 and out.startswith("rated 1, already rated 1, rejected 0")
    assert state(store_dir)[0]["alice"]["main"] == 10000 - 9


def test_post_paid_down_to_the_credit_limit_then_unpaid(store_dir, tmp_path, capsys):
    before = state(store_dir)[0]["bob"]["main"]
    f = write(tmp_path, "bob.jsonl", [
        json.dumps({"id": "call-1", "identity": "e164:46700000002", "context": "32260@3gpp.org",
                    "start": MON, "end": MON + 3600, "units": 3600, "unit": "time"}),
        json.dumps({"id": 2, "identity": "e164:46700000002", "context": "32274@3gpp.org",
                    "start": str(MON), "end": str(MON), "units": "1", "unit": "service_specific_units"}),
        json.dumps({"id": "w", "identity": "e164:46700000004", "context": "wallet@ocs.example.org",
                    "start": MON, "end": MON, "units": 250, "unit": "money"})])
    code, out, _ = ocs_rate(store_dir, capsys, f)
    assert code == 0
    assert out.splitlines()[1] == "EUR: amount 850, unpaid 609 (minor units)"
    balances, events = state(store_dir)
    # 3600 s at peak: 1200; 100 + credit limit 500 cover 600; the SMS finds nothing left
    assert [(e["record_id"], e["amount"], e["unpaid"], e["impacts"]) for e in events] == [
        ("call-1", 600, 600, [["main", -600]]), ("2", 0, 9, []), ("w", 250, 0, [["main", -250]])]
    assert balances["bob"]["main"] == -500 and events[1]["balance_after"] == {"money": -500}
    # conservation: money before - after == amounts debited (the price less what is unpaid)
    bob = [e for e in events if e["account"] == "bob"]
    assert before - balances["bob"]["main"] == sum(e["amount"] for e in bob) == 1209 - sum(e["unpaid"] for e in bob)
    assert balances["dave"]["main"] == 750          # suspended: post-paid usage is still rated


def test_allowances_first_and_only_for_their_rating_groups(store_dir):
    with LmdbStore(store_dir) as st:
        def go(rid, rg, octets):
            rec = offline.parse_record({"id": rid, "identity": "e164:46700000001", "context": "32251@3gpp.org",
                                        "rating_group": rg, "start": MON, "end": MON + 60, "units": octets,
                                        "unit": "total_octets"})
            return st.write(lambda t: offline.rate_record(t, rec, MON + 100))["event"]
        e = go("a", 10, 524288)
        assert (e["amount"], e["impacts"]) == (0, [["data-1mb", -524288]])
        e = go("b", 20, 1048576)                   # the allowance is for rating group 10 only
        assert (e["amount"], e["impacts"]) == (4, [["main", -4]])
        e = go("c", 10, 1048576 + 1)    # 524288 left; 524289 over -> 525312 x 2 / 2^20: 2
        assert (e["amount"], e["impacts"]) == (2, [["data-1mb", -524288], ["main", -2]])
        assert e["balance_after"] == {"money": 10000 - 6, "total_octets": 0}
        other = offline.parse_record({"id": "c", "identity": "e164:46700000001", "context": "x", "start": 1,
                                      "end": 1, "units": 1, "unit": "time"})
        with pytest.raises(offline.RecordRejected, match=f"^record id c was rated before with other "
                                                         f"content \\(event {e['event_id']}\\)$"):
            st.write(lambda t: offline.rate_record(t, other, MON))
        same = offline.parse_record({"id": "c", "identity": "e164:46700000001", "context": "32251@3gpp.org",
                                     "rating_group": "10", "start": "2026-11-23T09:00:00+01:00",
                                     "end": MON + 60, "units": 1048577, "unit": "total_octets"})
        assert st.write(lambda t: offline.rate_record(t, same, MON)) == {
            "status": "already_rated", "record_id": "c", "event_id": e["event_id"]}
        with st.read() as t:     # the marker: event id and content hash
            assert bytes(t.get("meta", b"rated:c")).decode() == f"{e['event_id']} {offline.content_hash(same)}"
        st.write(lambda t: t.put("meta", b"rated:old", b"x-1"))   # a marker without a hash (older)
        old = attrs.evolve(other, record_id="old")
        assert st.write(lambda t: offline.rate_record(t, old, MON))["event_id"] == "x-1"


def test_reused_id_with_other_content_is_rejected_not_dropped(store_dir, tmp_path, capsys):
    sms = {"id": "ok1", "identity": "e164:46700000001", "context": "32274@3gpp.org", "start": MON,
           "end": MON, "units": 1, "unit": "service_specific_units"}
    f = write(tmp_path, "ids.jsonl", [json.dumps(sms), json.dumps({**sms, "units": 50})])
    code, out, _ = ocs_rate(store_dir, capsys, f)
    assert code == 1 and out.startswith("rated 1, already rated 0, rejected 1")
    (event,) = state(store_dir)[1]
    assert [json.loads(x) for x in open(f + ".rejects")] == [{"line": 2, "record": json.dumps({**sms, "units": 50}),
        "reason": f"record id ok1 was rated before with other content (event {event['event_id']})"}]
    again = write(tmp_path, "again.csv", ["id,identity,context,start,end,units,unit",
                                          "ok1,e164:46700000001,32274@3gpp.org,2026-11-23T08:00:00Z,"
                                          f"{MON},1,service_specific_units"])
    assert ocs_rate(store_dir, capsys, again)[:2] == (0, f"rated 0, already rated 1, rejected 0 (-> {again}.rejects)\n")
    assert state(store_dir)[0]["alice"]["main"] == 10000 - 9


REJECTS = [  # (CSV line, reason)
    (f"r1,e164:46799999999,32251@3gpp.org,10,{MON},{MON},1,total_octets", "unknown identity e164:46799999999"),
    (f"r2,e164:46700000001,video@ocs.example.org,,{MON},{MON},1,time",
     "no tariff for video@ocs.example.org in plan mobile"),
    (f"r3,e164:46700000001,32251@3gpp.org,99,{MON},{MON},1,total_octets",
     "no tariff for 32251@3gpp.org rating group 99 in plan mobile"),
    (f"r4,e164:46700000001,32251@3gpp.org,10,{MON},{MON},12x,total_octets", "units: '12x' is not an integer"),
    (f"r5,e164:46700000001,32251@3gpp.org,ten,{MON},{MON},1,total_octets", "rating_group: 'ten' is not an integer"),
    (f"r6,e164:46700000001,32260@3gpp.org,,{MON},{MON - 100},1,time", f"end {MON - 100} is before start {MON}"),
    (f"r7,e164:46700000001,32260@3gpp.org,,{MON},{MON},1,total_octets",
     "unit total_octets, but the tariff for 32260@3gpp.org rates time"),
    (f"r8,e164:46700000003,32260@3gpp.org,,{MON},{MON},1,time", "account carol is closed"),
    (f"r9,e164:46700000001,32260@3gpp.org,,{MON},{MON},-5,time", "units must be >= 0, not -5"),
    (f"r10,e164:46700000001,32260@3gpp.org,,{MON},{MON},5,octets", "unknown unit 'octets'; expected one of "
     "time, money, total_octets, input_octets, output_octets, service_specific_units"),
    (f"r11,,32260@3gpp.org,,{MON},{MON},5,time", "missing identity"),
    (f"r12,phone:1,32260@3gpp.org,,{MON},{MON},5,time",
     "unknown identity kind 'phone'; expected one of e164, imsi, sip, nai, private"),
    ("r13,e164:46700000001,32260@3gpp.org,,2026-11-23T08:00:00,2026-11-23T08:01:00,5,time",
     "start: '2026-11-23T08:00:00' has no UTC offset (end it with Z or +00:00)"),
    (f"r14,e164:46700000001,32260@3gpp.org,,{MON}.5,{MON + 1},5,time",
     f"start: '{MON}.5' is neither epoch seconds nor an ISO 8601 time"),
    ("r15,e164:46700000001,32260@3gpp.org", "3 columns, the header has 8"),
    ('r16,"e164:46700000001,32260@3gpp.org', "not a CSV row: unexpected end of data"),
    (f"r17,e164:46700000001,32260@3gpp.org,,{MON},9999-12-31T23:59:59-01:00,5,time",
     "end: '9999-12-31T23:59:59-01:00' is not between 1970 and 9999 (UTC)"),
    (f"r18,e164:46700000001,32260@3gpp.org,,{MON},{MON},{'9' * 5000},time",
     f"units must be <= {offline.MAX_UNITS}, not a number of 5000 digits"),
]


def test_bad_records_rejected_with_reasons_good_ones_all_rated(store_dir, tmp_path, capsys):
    lines = [HEADER]
    for i, (bad, _) in enumerate(REJECTS):
        lines += [bad, f"ok-{i},e164:46700000001,32274@3gpp.org,,{MON},{MON},1,service_specific_units", ""]
    f = write(tmp_path, "mixed.csv", lines)
    code, out, _ = ocs_rate(store_dir, capsys, f, "--rejects", str(tmp_path / "bad.jsonl"))
    assert code == 1
    assert out.splitlines()[0] == f"rated {len(REJECTS)}, already rated 0, rejected {len(REJECTS)} (-> {tmp_path}/bad.jsonl)"
    got = [json.loads(x) for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert got == [{"line": 2 + 3 * i, "record": bad, "reason": reason} for i, (bad, reason) in enumerate(REJECTS)]
    balances, events = state(store_dir)
    assert [e["record_id"] for e in events] == [f"ok-{i}" for i in range(len(REJECTS))]
    assert balances["alice"]["main"] == 10000 - 9 * len(REJECTS) and balances["carol"]["main"] == 1000
    # fixed and fed again: only the fixed record is charged
    fixed = write(tmp_path, "fixed.csv", [HEADER, REJECTS[3][0].replace("12x", "1048576"), lines[2]])
    code, out, _ = ocs_rate(store_dir, capsys, fixed)
    assert code == 0 and out.startswith("rated 1, already rated 1, rejected 0")
    assert state(store_dir)[0]["alice"] == {"main": 10000 - 9 * len(REJECTS), "data-1mb": 0}


def test_jsonl_rejects(store_dir, tmp_path, capsys):
    good = {"identity": "e164:46700000001", "context": "32274@3gpp.org", "start": MON, "end": MON,
            "units": 1, "unit": "service_specific_units"}
    lines = ["{not json", "[1, 2]", json.dumps({**good, "units": 1.5}), json.dumps({**good, "extra": 1}),
             json.dumps({**good, "units": True}), json.dumps({**good, "start": "2026-11-23T08:00:00.5Z"}),
             json.dumps({**good, "id": "x", "record_id": "y"}), json.dumps({**good, "id": "x" * 201}),
             json.dumps({**good, "identity": "nai:" + "x" * 600}),
             json.dumps({k: v for k, v in good.items() if k != "units"}), json.dumps(good)]
    f = write(tmp_path, "u.json", lines)
    code, out, _ = ocs_rate(store_dir, capsys, f)
    assert code == 1 and out.startswith("rated 1, already rated 0, rejected 10")
    assert [json.loads(x)["reason"] for x in open(f + ".rejects")] == [
        "not JSON: Expecting property name enclosed in double quotes", "not a JSON object",
        "units: 1.5 is not an integer", "unknown field(s) extra", "units: True is not an integer",
        "start: '2026-11-23T08:00:00.5Z' has a fraction of a second; times are whole seconds",
        "give record_id or id, not both", "record id is longer than 200 octets",
        "identity is longer than 200 octets", "missing units"]


def test_usage_and_file_errors_exit_2(store_dir, tmp_path, capsys):
    f = write(tmp_path, "u.txt", ["x"])
    assert ocs_rate(store_dir, capsys, f)[::2] == (2, f"ocs: cannot tell the format of {f}: give --format "
                                                      "csv or --format jsonl\n")
    code, _, err = ocs_rate(store_dir, capsys, str(tmp_path / "nope.csv"))
    assert code == 2 and err.startswith(f"ocs: cannot read {tmp_path}/nope.csv: No such file")
    bad = write(tmp_path, "h.csv", ["identity,context,rating_grup,start,end,units,unit"])
    code, _, err = ocs_rate(store_dir, capsys, bad)
    assert code == 2 and err.startswith(f"ocs: {bad}: header line 1: unknown column(s) rating_grup;")
    code, _, err = ocs_rate(store_dir, capsys, "-", "--format", "csv")
    assert (code, err) == (2, "ocs: reading standard input: give --rejects PATH\n")
    code, _, err = ocs_rate(str(tmp_path / "nostore"), capsys, write(tmp_path, "ok.csv", ALICE_CSV))
    assert code == 2 and err.startswith(f"ocs: no store at {tmp_path}/nostore")
    assert not (tmp_path / "nostore").exists()
    empty = write(tmp_path, "empty.jsonl", [""])
    assert ocs_rate(store_dir, capsys, empty)[:2] == (0, f"rated 0, already rated 0, rejected 0 (-> {empty}.rejects)\n")


def test_cli_end_to_end(store_dir, tmp_path, capsys):
    for gateway in ("em", "brm", "billing"):      # ocs.cli imports them (landing separately)
        pytest.importorskip(f"ocs.gateways.{gateway}")
    from ocs.cli import main
    f = write(tmp_path, "usage.csv", ALICE_CSV + [REJECTS[0][0]])
    assert main(["rate", "--store", store_dir, f]) == 1
    out = capsys.readouterr().out
    assert out == (f"rated 5, already rated 0, rejected 1 (-> {f}.rejects)\n"
                   "EUR: amount 139, unpaid 0 (minor units)\n")
    assert main(["rate", "--store", store_dir, "--rejects", str(tmp_path / "r"), f]) == 1
    assert capsys.readouterr().out.startswith("rated 0, already rated 5, rejected 1")
    assert state(store_dir)[0]["alice"]["main"] == 10000 - 139


def test_many_batches_from_stdin_with_rejects_inside(store_dir, tmp_path, capsys, monkeypatch):
    rec = {"identity": "e164:46700000002", "context": "32274@3gpp.org", "start": MON, "end": MON,
           "units": 1, "unit": "service_specific_units"}
    lines = [json.dumps({**rec, "id": f"m{i}", **({"identity": "e164:1"} if i % 97 == 0 else {})})
             for i in range(1203)]
    monkeypatch.setattr("sys.stdin", type("In", (), {"buffer": iter(x.encode() + b"\n" for x in lines)}))
    code, out, _ = ocs_rate(store_dir, capsys, "-", "--format", "jsonl", "--rejects", str(tmp_path / "r"))
    assert code == 1 and out.startswith("rated 1190, already rated 0, rejected 13")   # 0, 97, ..., 1164
    assert [json.loads(x)["line"] for x in open(tmp_path / "r")] == list(range(1, 1204, 97))
    balances, events = state(store_dir)
    assert len(events) == 1190 and balances["bob"]["main"] == -500        # 66 paid, the rest unpaid
    assert sum(e["amount"] for e in events) == 600 and sum(e["unpaid"] for e in events) == 1190 * 9 - 600


def test_any_bad_line_is_rejected_and_the_rest_rated(store_dir, tmp_path, capsys, monkeypatch):
    good = {"identity": "e164:46700000001", "context": "32274@3gpp.org", "start": MON, "end": MON,
            "units": 1, "unit": "service_specific_units"}
    parse = offline.parse_record
    def parse_or_fail(fields, n):                  # anything unforeseen a line can raise
        if fields.get("id") == "boom":
            raise RuntimeError("boom\ud800\nat line 2")
        return parse(fields, n)
    monkeypatch.setattr(offline, "parse_record", parse_or_fail)
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b"[" * 200000 + b'\n{"id": "\xff"}\n' + "\n".join(json.dumps(x) for x in [
        {**good, "id": "\ud800"}, {**good, "id": "boom"}, good]).encode() + b"\n")
    code, out, err = ocs_rate(store_dir, capsys, str(f))
    assert (code, err) == (1, "") and out.startswith("rated 1, already rated 0, rejected 4")
    assert [(r["line"], r["reason"]) for r in map(json.loads, open(f"{f}.rejects"))] == [
        (1, "not JSON: nested too deeply"), (2, "not UTF-8 (octet 9)"),
        (3, "field 'id': '\\ud800' is not valid Unicode (a lone surrogate)"),
        (4, "cannot be read: RuntimeError: boom\ud800 at line 2")]
    # CSV: a broken data row or invalid UTF-8 is a reject; a broken header stops the file (exit 2)
    rows = [b"identity,context,start,end,units,unit", b'"e164:46700000001,32274@3gpp.org,1,1,1,money',
            b"e164:4670000000\xc3,32274@3gpp.org,1,1,1,money",
            f"e164:46700000001,32274@3gpp.org,{MON},{MON},2,service_specific_units".encode()]
    f.with_suffix(".csv").write_bytes(b"\n".join(rows))
    code, out, _ = ocs_rate(store_dir, capsys, str(f.with_suffix(".csv")))
    assert code == 1 and out.startswith("rated 1, already rated 0, rejected 2")
    f.with_suffix(".csv").write_bytes(b'"identity,context\n' + rows[3])
    assert ocs_rate(store_dir, capsys, str(f.with_suffix(".csv"))) == (
        2, "", f"ocs: {tmp_path}/bad.csv: header line 1 is not a CSV row: unexpected end of data\n")
    assert state(store_dir)[0]["alice"]["main"] == 10000 - 27


def test_rejects_may_not_be_the_input(store_dir, tmp_path, capsys, monkeypatch):
    lines = [json.dumps({"id": f"s{i}", "identity": "e164:46700000001", "context": "32274@3gpp.org",
                         "start": MON, "end": MON, "units": 1 if i % 7 else "x", "unit": "service_specific_units"})
             for i in range(2000)]
    f = write(tmp_path, "same.jsonl", lines)
    data = open(f, "rb").read()
    os.symlink(f, tmp_path / "link.jsonl")
    monkeypatch.chdir(tmp_path)
    for rejects in (f, "same.jsonl", "./same.jsonl", "link.jsonl"):
        assert ocs_rate(store_dir, capsys, f, "--rejects", rejects) == (
            2, "", f"ocs: --rejects {rejects} is the input file: give another path\n")
    monkeypatch.setattr("sys.stdin", open(f))
    assert ocs_rate(store_dir, capsys, "-", "--format", "jsonl", "--rejects", "link.jsonl")[0] == 2
    assert open(f, "rb").read() == data and state(store_dir)[1] == []
    monkeypatch.setattr("sys.stdin", open(os.devnull))          # the same, but not a regular file
    assert ocs_rate(store_dir, capsys, "-", "--format", "csv", "--rejects", os.devnull)[0] == 0
    code, out, _ = ocs_rate(store_dir, capsys, "link.jsonl", "--rejects", "/dev/null")     # not renamed onto
    assert code == 1 and out.startswith("rated 1714, already rated 0, rejected 286 (-> /dev/null)")


def test_reject_file_replaced_only_when_a_run_completes(store_dir, tmp_path, capsys, monkeypatch):
    f = write(tmp_path, "u.csv", [HEADER] + [r for r, _ in REJECTS[:4]] + ALICE_CSV[1:])
    (tmp_path / "r").write_text("the previous run's rejects\n")
    os.chmod(tmp_path / "r", 0o640)
    flush, calls = rate._flush, []
    def interrupted(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        flush(*a)
    monkeypatch.setattr(rate, "BATCH", 3)
    monkeypatch.setattr(rate, "_flush", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ocs_rate(store_dir, capsys, f, "--rejects", str(tmp_path / "r"))
    assert (tmp_path / "r").read_text() == "the previous run's rejects\n"
    assert sorted(os.listdir(tmp_path)) == ["r", "store", "u.csv"]          # no temp file left
    monkeypatch.setattr(rate, "_flush", flush)
    code, out, _ = ocs_rate(store_dir, capsys, f, "--rejects", str(tmp_path / "r"))
    assert code == 1 and out.startswith("rated 5, already rated 0, rejected 4")
    assert [json.loads(x)["line"] for x in open(tmp_path / "r")] == [2, 3, 4, 5]
    assert os.stat(tmp_path / "r").st_mode & 0o777 == 0o640
