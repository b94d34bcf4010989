"""Wireshark's Diameter dissector as an independent judge of the node's bytes.

Captures loopback traffic on the node's port while python-diameter's Node does
CER/CEA, DWR/DWA, an unknown command (3001) and DPR/DPA against the in-process
node (the exchange of test_e2e_python_diameter.py), then reads the capture back
with `tshark -d tcp.port==PORT,diameter` and with `tools/decode.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from test_e2e_python_diameter import (UNKNOWN_COMMAND, check_exchange, run_python_diameter_exchange,
                                      running_node)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TSHARK = shutil.which("tshark")

# (command code, is request) in the order the exchange sends them
EXPECTED = [(257, True), (257, False), (280, True), (280, False),
            (UNKNOWN_COMMAND, True), (UNKNOWN_COMMAND, False), (282, True), (282, False)]

pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not on PATH")


class Capture:
    """`tshark -i lo -f "tcp port PORT" -w FILE`, started before and stopped after."""

    def __init__(self, port: int, path: str):
        self.path = path
        self.stderr: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [TSHARK, "-i", "lo", "-f", f"tcp port {port}", "-w", path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))
            if line.startswith("Capturing on"):
                self.ready.set()
        self.ready.set()             # exited: wake the waiter

    def wait_ready(self, timeout: float = 10.0) -> None:
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            # tshark is installed (else the module is skipped), so a capture that cannot
            # start is a failure of this machine's setup, not a reason to pass silently
            pytest.fail(f"capture on lo impossible: tshark exited {self.proc.returncode}: "
                        + " | ".join(self.stderr))
        time.sleep(0.2)              # dumpcap has the interface; let the filter settle

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()    # SIGTERM: tshark flushes and closes the file
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(timeout)


def tshark_read(path: str, port: int, *args: str) -> str:
    out = subprocess.run([TSHARK, "-r", path, "-d", f"tcp.port=={port},diameter", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"tshark -r failed ({out.returncode}): {out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def captured(tmp_path_factory, dictionary):
    path = str(tmp_path_factory.mktemp("tshark") / "exchange.pcapng")
    with running_node(dictionary) as node:
        port = node.port
        cap = Capture(port, path)
        try:
            cap.wait_ready()
            answers = run_python_diameter_exchange(port)
            node.wait_connections(0)
            time.sleep(0.5)          # last FIN/ACK into the capture
        finally:
            cap.stop()
    assert os.path.getsize(path) > 0, "empty capture: " + " | ".join(cap.stderr)
    return path, port, answers


def test_exchange_answers(captured):
    _, _, answers = captured
    check_exchange(answers)


def test_tshark_decodes_every_message(captured):
    path, port, _ = captured
    fields = tshark_read(path, port, "-Y", "diameter", "-T", "fields", "-E", "separator=|",
                         "-E", "occurrence=a", "-e", "frame.number", "-e", "diameter.cmd.code",
                         "-e", "diameter.flags.request", "-e", "diameter.flags.error",
                         "-e", "diameter.Result-Code", "-e", "diameter.endtoendid")
    seen, answers = [], []
    for line in fields.splitlines():
        _frame, codes, requests, errors, results, _e2e = line.split("|")
        # one TCP segment may carry several messages: each field is a comma list
        results_left = [r for r in results.split(",") if r]
        for code, req, err in zip(codes.split(","), requests.split(","), errors.split(",")):
            is_req = req in ("1", "True")
            seen.append((int(code), is_req))
            if not is_req:       # every answer here has exactly one Result-Code
                answers.append((int(code), err in ("1", "True"), int(results_left.pop(0))))
    assert seen == EXPECTED, f"tshark saw {seen}"
    assert answers == [(257, False, 2001), (280, False, 2001), (UNKNOWN_COMMAND, True, 3001),
                       (282, False, 2001)], answers

    # no malformed frame anywhere in the capture, no dissector complaints
    assert tshark_read(path, port, "-Y", "_ws.malformed") == ""

    verbose = tshark_read(path, port, "-V")
    assert "Malformed Packet" not in verbose
    sections = diameter_sections(verbose)
    assert len(sections) == len(EXPECTED)
    for section in sections:
        # the Diameter dissector's own complaints (TCP's SYN/FIN "chat" is fine)
        assert "Expert Info" not in section, section
        for bad in ("AVP: Unknown", "Unknown AVP", "Undecoded", "Malformed", "bad length",
                    "length is wrong"):
            assert bad.lower() not in section.lower(), (bad, section)


def diameter_sections(verbose: str) -> list[str]:
    """The "Diameter Protocol" subtrees of `tshark -V` output (one per message)."""
    sections, current = [], None
    for line in verbose.splitlines():
        if line.startswith("Diameter Protocol"):
            current = [line]
            sections.append(current)
        elif current is not None and line[:1] in (" ", "\t"):
            current.append(line)
        else:
            current = None
    return ["\n".join(s) for s in sections]


def test_ocs_decode_tool_reads_the_capture(captured):
    path, port, _ = captured
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "decode.py"), path,
                          "--port", str(port)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.stderr == "", out.stderr
    text = out.stdout
    problems = [line.strip() for line in text.splitlines() if "!!" in line]
    # the only message the node itself could refuse is our unknown-command
    # request (3001); decode.py checks grammar only, so it may not flag it at all
    assert all("3001" in p for p in problems) and len(problems) <= 1, text
    assert out.returncode == (1 if problems else 0)
    for name in ("Capabilities-Exchange-Request", "Capabilities-Exchange-Answer",
                 "Device-Watchdog-Request", "Device-Watchdog-Answer",
                 "Disconnect-Peer-Request", "Disconnect-Peer-Answer"):
        assert text.count(name) == 1, (name, text)
    assert text.count(str(UNKNOWN_COMMAND)) >= 2, text
    headers = [line for line in text.splitlines() if line and not line[0].isspace()
               and "(code " in line]
    assert len(headers) == len(EXPECTED), text
