"""The shipped dictionaries load; every inconsistency is refused with file:line."""

import os
import subprocess
import sys

import pytest

from ocs.diameter.dictionary import DataType
from ocs.diameter.dictload import load_directory, load_files
from ocs.diameter.errors import DictionaryError


def test_shipped_dictionaries(dictionary):
    assert set(dictionary.files) == {"base_rfc6733", "credit_control_rfc4006", "tgpp_ro_gy_ts32299"}
    cc = dictionary.commands_by_name["Credit-Control-Request"]
    assert (cc.code, cc.request, cc.proxiable, cc.application_id) == (272, True, True, 4)
    # 3GPP @redefine of MSCC keeps RFC 8506 elements and adds TS 32.299 ones
    mscc = dictionary.avp("Multiple-Services-Credit-Control").grammar
    names = {r.name for r in mscc.rules}
    assert {"Granted-Service-Unit", "Used-Service-Unit", "Rating-Group", "Result-Code",
            "Final-Unit-Indication", "Volume-Quota-Threshold", "Quota-Holding-Time",
            "Reporting-Reason", "Trigger"} <= names
    rr = dictionary.avp("Reporting-Reason")
    assert (rr.code, rr.vendor, rr.type, rr.enum[3]) == (872, 10415, DataType.Enumerated, "QUOTA_EXHAUSTED")
    assert dictionary.avp("Called-Station-Id").key == (30, 0)
    assert dictionary.avp("3GPP-Charging-Id").type is DataType.Unsigned32
    for a in dictionary.avps.values():
        assert (a.type is DataType.Grouped) == (a.grammar is not None), a.name


def test_every_base_command_present(dictionary):
    for code in (257, 258, 271, 272, 274, 275, 280, 282):
        assert dictionary.command(code, True) and dictionary.command(code, False), code


HEADER = "@name {name}\n"
BASE = """@name a
@avp_types
Origin-Host 264 DiameterIdentity M
Vendor-Id 266 Unsigned32 M
Disconnect-Cause 273 Enumerated M
Proxy-Info 284 Grouped M
@enum Disconnect-Cause
REBOOTING 0
@grouped
Proxy-Info ::= < AVP Header: 284 >
    { Origin-Host }
    * [ AVP ]
@messages
DWR ::= < Diameter Header: 280, REQ >
    { Origin-Host }
"""

BAD = [
    ("unknown directive", "@name b\n@inherits a\n@nope\n", "b.dict:3", "unknown directive"),
    ("bad type", "@name b\n@inherits a\n@avp_types\nX 1 Integer99 M\n", "b.dict:4", "unknown type"),
    ("V without vendor", "@name b\n@inherits a\n@avp_types\nX 1 Unsigned32 MV\n", "b.dict:4", "V flag"),
    ("vendor without V", "@name b\n@inherits a\n@vendor 10415\n@avp_types\nX 1 Unsigned32 M\n", "b.dict:5", "V flag"),
    ("bad flag", "@name b\n@inherits a\n@avp_types\nX 1 Unsigned32 Q\n", "b.dict:4", "bad flags"),
    ("duplicate name", "@name b\n@inherits a\n@avp_types\nVendor-Id 999 Unsigned32 M\n", "b.dict:4", "already defined"),
    ("duplicate code", "@name b\n@inherits a\n@avp_types\nOther 266 Unsigned32 M\n", "b.dict:4", "already defined as Vendor-Id"),
    ("enum on non-enum", "@name b\n@inherits a\n@enum Vendor-Id\nX 1\n", "b.dict:3", "not Enumerated"),
    ("enum twice", "@name b\n@inherits a\n@enum Disconnect-Cause\nBUSY 1\n", "b.dict:3", "already given"),
    ("duplicate label", "@name b\n@inherits a\n@avp_types\nE 5 Enumerated M\n@enum E\nX 1\nX 2\n", "b.dict:7", "duplicate label"),
    ("duplicate value", "@name b\n@inherits a\n@avp_types\nE 5 Enumerated M\n@enum E\nX 1\nY 1\n", "b.dict:7", "already X"),
    ("undefined in grammar", "@name b\n@inherits a\n@messages\nX ::= < Diameter Header: 9, REQ >\n { Nope }\n", "b.dict:5", "Nope"),
    ("header mismatch", "@name b\n@inherits a\n@avp_types\nG 7 Grouped M\n@grouped\nG ::= < AVP Header: 8 >\n", "b.dict:6", "header says 8/0"),
    ("grouped without grammar", "@name b\n@inherits a\n@avp_types\nG 7 Grouped M\n", "b.dict:4", "no grammar"),
    ("grammar on non-grouped", "@name b\n@inherits a\n@grouped\nVendor-Id ::= < AVP Header: 266 >\n", "b.dict:4", "is Unsigned32"),
    ("duplicate command", "@name b\n@inherits a\n@messages\nDWR2 ::= < Diameter Header: 280, REQ >\n { Origin-Host }\n", "b.dict:4", "already defined as DWR"),
    ("redefine of nothing", "@name b\n@inherits a\n@redefine\nNope ::= < Diameter Header: 9 >\n", "b.dict:4", "no inherited file"),
    ("plain redefinition", "@name b\n@inherits a\n@grouped\nProxy-Info ::= < AVP Header: 284 >\n { Origin-Host }\n", "b.dict:4", "already defined in a"),
    ("missing inherit", "@name b\n@inherits zzz\n", "b.dict:2", "no such dictionary"),
    ("bad element", "@name b\n@inherits a\n@messages\nX ::= < Diameter Header: 9, REQ >\n { Origin-Host ]\n", "b.dict:5", "cannot read"),
    ("name mismatch", "@name c\n", "b.dict:1", "does not match"),
    ("qualifier without star", "@name b\n@inherits a\n@messages\nX ::= < Diameter Header: 9, REQ >\n 2 { Origin-Host }\n", "b.dict:5", "qualifier"),
    ("fixed AVP wildcard", "@name b\n@inherits a\n@messages\nX ::= < Diameter Header: 9, REQ >\n < AVP >\n", "b.dict:5", "no meaning"),
    ("AVP twice", "@name b\n@inherits a\n@messages\nX ::= < Diameter Header: 9, REQ >\n * [ AVP ]\n 1* { AVP }\n", "b.dict:6", "twice"),
    ("code too big", "@name b\n@inherits a\n@avp_types\nX 4294967296 Unsigned32 M\n", "b.dict:4", "32 bits"),
    ("non-ASCII digits", "@name b\n@inherits a\n@avp_types\nX \u00b2 Unsigned32 M\n", "b.dict:4", "not a number"),
    ("command code too big", "@name b\n@inherits a\n@messages\nX ::= < Diameter Header: 16777216, REQ >\n", "b.dict:4", "24 bits"),
    ("bad AVP name", "@name b\n@inherits a\n@avp_types\nB$d 1 Unsigned32 M\n", "b.dict:4", "bad AVP name"),
    ("redefine changes code", "@name b\n@inherits a\n@redefine\nDWR ::= < Diameter Header: 281, REQ >\n { Origin-Host }\n", "b.dict:4", "changes its header"),
]


@pytest.mark.parametrize("text,where,what", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_loader_refuses(tmp_path, text, where, what):
    (tmp_path / "a.dict").write_text(BASE)
    (tmp_path / "b.dict").write_text(text)
    with pytest.raises(DictionaryError) as e:
        load_directory(str(tmp_path))
    assert where in str(e.value) and what in str(e.value)


def test_inherits_cycle(tmp_path):
    (tmp_path / "a.dict").write_text("@name a\n@inherits b\n")
    (tmp_path / "b.dict").write_text("@name b\n@inherits a\n")
    with pytest.raises(DictionaryError, match="cycle"):
        load_directory(str(tmp_path))


def test_redefine_replaces(tmp_path):
    (tmp_path / "a.dict").write_text(BASE)
    (tmp_path / "b.dict").write_text("@name b\n@inherits a\n@redefine\n"
                                     "DWR ::= < Diameter Header: 280, REQ >\n { Origin-Host } [ Vendor-Id ]\n")
    d = load_files([str(tmp_path / "b.dict"), str(tmp_path / "a.dict")])
    assert [r.name for r in d.commands_by_name["DWR"].grammar.rules] == ["Origin-Host", "Vendor-Id"]


def _ocs(*args):
    return subprocess.run([sys.executable, "-m", "ocs", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=60)


def test_cli_dict_check_and_dump():
    r = _ocs("dict", "check")
    assert r.returncode == 0 and r.stdout.startswith("ok: 3 files")
    r = _ocs("dict", "dump")
    assert r.returncode == 0
    assert "Credit-Control-Request ::= < Diameter Header: 272, REQ, PXY, 4 >" in r.stdout
    assert "QUOTA_EXHAUSTED" in r.stdout


def test_cli_dict_check_reports_file_and_line(tmp_path):
    (tmp_path / "a.dict").write_text("@name a\n@avp_types\nX 1 Nope M\n")
    r = _ocs("dict", "check", "--dir", str(tmp_path))
    assert r.returncode == 2 and "a.dict:3" in r.stderr and "unknown type" in r.stderr


def test_names_must_come_from_the_file_or_what_it_inherits(tmp_path):
    (tmp_path / "a.dict").write_text(BASE)
    # c does not inherit b: neither its grammars nor its enums may use b's AVPs
    (tmp_path / "b.dict").write_text("@name b\n@inherits a\n@avp_types\nE 5 Enumerated M\n")
    (tmp_path / "c.dict").write_text("@name c\n@inherits a\n@enum E\nX 1\n")
    with pytest.raises(DictionaryError, match="c.dict:3: @enum E: the AVP is in b"):
        load_directory(str(tmp_path))
    (tmp_path / "c.dict").write_text("@name c\n@inherits a\n@messages\n"
                                     "X ::= < Diameter Header: 9, REQ >\n [ E ]\n")
    with pytest.raises(DictionaryError, match="c.dict:5: X names E of b"):
        load_directory(str(tmp_path))


def test_avp_wildcard_bounds(dictionary, tmp_path):
    # RFC 8506 Subscription-Id-Extension ends with "[ AVP ]": at most one more AVP
    ext = dictionary.avp("Subscription-Id-Extension").grammar
    assert (ext.allows_any, ext.any_max) == (True, 1)
    failed = dictionary.avp("Failed-AVP").grammar
    assert (failed.any_min, failed.allows_any) == (1, True)
    r = _ocs("dict", "dump")
    assert "1* { AVP }" in r.stdout and "    [ AVP ]" in r.stdout
