"""Every wire sample decoded whole, byte by byte and with trailing bytes, and
re-encoded byte for byte; python-diameter decodes each one too (an independent
parser), so a symmetric bug in our encoder and decoder cannot hide."""

import pytest

from ocs.diameter.framing import Framer
from ocs.diameter.grammar import first_error
from ocs.diameter.message import decode_message

from wire_samples import SAMPLES

IDS = [s[0] for s in SAMPLES]


def lookup(msg, path):
    names = path.split("/")
    node = msg.find(names[0])
    for name in names[1:]:
        assert node is not None, path
        node = node.find(name)
    assert node is not None, f"{path} missing"
    return node.value


@pytest.mark.parametrize("name,command,hexdata,values", SAMPLES, ids=IDS)
def test_decode_whole(dictionary, name, command, hexdata, values):
    data = bytes.fromhex(hexdata)
    msg, errors = decode_message(data, dictionary)
    assert errors == []
    assert first_error(errors, msg) is None
    assert (msg.code, msg.is_request, msg.application_id) == command
    for path, expected in values.items():
        assert lookup(msg, path) == expected
    assert msg.encode() == data


@pytest.mark.parametrize("name,command,hexdata,values", SAMPLES, ids=IDS)
def test_byte_by_byte(dictionary, name, command, hexdata, values):
    data = bytes.fromhex(hexdata)
    framer = Framer()
    frames = []
    for i in range(len(data)):
        got, error = framer.feed(data[i:i + 1])
        assert error is None
        frames += got
        if i < len(data) - 1:
            assert got == []
    assert frames == [data]
    assert framer.buffered == 0


@pytest.mark.parametrize("name,command,hexdata,values", SAMPLES, ids=IDS)
def test_trailing_bytes(dictionary, name, command, hexdata, values):
    data = bytes.fromhex(hexdata)
    framer = Framer()
    frames, error = framer.feed(data + data[:7])
    assert (frames, error) == ([data], None)
    assert framer.buffered == 7           # the start of the next message waits
    frames, error = framer.feed(data[7:])
    assert (frames, error) == ([data], None)


def test_all_samples_in_one_stream(dictionary):
    stream = b"".join(bytes.fromhex(s[2]) for s in SAMPLES)
    frames, error = Framer().feed(stream)
    assert error is None
    assert [decode_message(f, dictionary)[0].code for f in frames] == [s[1][0] for s in SAMPLES]


@pytest.mark.parametrize("name,command,hexdata,values", SAMPLES, ids=IDS)
def test_python_diameter_decodes_sample(name, command, hexdata, values):
    from diameter.message import Message as PdMessage
    data = bytes.fromhex(hexdata)
    from ocs.diameter.message import decode_message
    from ocs.diameter.dictload import load_directory
    other = PdMessage.from_bytes(data, plain_msg=True)
    assert other.header.command_code == command[0]
    assert bool(other.header.is_request) == command[1]
    assert other.header.application_id == command[2]
    assert other.as_bytes() == data
    ours, _ = decode_message(data, load_directory())

    def tree(avps, theirs):
        assert [(a.code, a.vendor) for a in avps] == [(t.code, t.vendor_id) for t in theirs]
        for a, t in zip(avps, theirs):
            if a.defn is not None and a.defn.grammar is not None:
                tree(a.value, t.value)
            else:
                assert a.data == t.payload

    tree(ours.avps, other.avps)


def test_decode_tool_prints_avp_tree():
    import subprocess, sys, os
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hexdata = "".join(s[2] for s in SAMPLES if s[0] in ("CCR-U", "CCA"))
    r = subprocess.run([sys.executable, "tools/decode.py", hexdata], cwd=repo,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Credit-Control-Request (code 272, flags RP, application 4" in out
    assert "    Used-Service-Unit (446, M):" in out
    assert "      Reporting-Reason (872/10415, VM): 3 (QUOTA_EXHAUSTED)" in out
    assert "Credit-Control-Answer (code 272, flags P" in out
    assert "!!" not in out
    bad = subprocess.run([sys.executable, "tools/decode.py", "01000013" + hexdata[8:]],
                         cwd=repo, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "!! framing error 5015" in bad.stdout
