"""Interoperability with a real Diameter stack: freeDiameter (Debian's freediameterd)
connects to the node as a client: CER/CEA, watchdog both ways (Tw = 6 s on both
sides), then the node stops gracefully and freeDiameter answers its DPR.

freeDiameter advertises the Relay application, which the node accepts as a
common application (RFC 6733 §5.3). Skipped only when freeDiameterd is not
installed; .ci/run installs it.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

FREEDIAMETERD = shutil.which("freeDiameterd")
EXT = "/usr/lib/freeDiameter"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(FREEDIAMETERD is None, reason="freeDiameterd is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def fd_config(tmp_path, port: int) -> str:
    # freeDiameter insists on TLS credentials even when the peer is No_TLS
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=fd.example.net", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True, timeout=60)
    conf = tmp_path / "fd.conf"
    conf.write_text(f'''
Identity = "fd.example.net";
Realm = "example.net";
Port = 0;
SecPort = 0;
No_SCTP;
No_IPv6;
ListenOn = "127.0.0.1";
TwTimer = 6;
TLS_Cred = "{tmp_path}/cert.pem", "{tmp_path}/key.pem";
TLS_CA = "{tmp_path}/cert.pem";
LoadExtension = "{EXT}/dict_nasreq.fdx";
LoadExtension = "{EXT}/dict_rfc5777.fdx";
LoadExtension = "{EXT}/dict_dcca.fdx";
LoadExtension = "{EXT}/dict_dcca_3gpp.fdx";
LoadExtension = "{EXT}/dbg_msg_dumps.fdx" : "0x0080";
ConnectPeer = "ocs.example.net" {{ ConnectTo = "127.0.0.1"; Port = {port}; No_TLS; }};
''')
    return str(conf)


def test_freediameter_peer(tmp_path):
    port = free_port()
    node_log = open(tmp_path / "ocs.log", "w+")
    config = tmp_path / "ocs.toml"
    config.write_text("[diameter]\ntw = 6\n")          # our watchdog too, at the RFC minimum
    node = subprocess.Popen(
        [sys.executable, "-m", "ocs", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
         "--origin-host", "ocs.example.net", "--origin-realm", "example.net",
         "--store", str(tmp_path / "store"), "--metrics", "127.0.0.1:0"],
        cwd=REPO, stdout=node_log, stderr=subprocess.STDOUT)
    fd_log = open(tmp_path / "fd.log", "w+")
    fd = None
    try:
        wait_for(lambda: _listening(port), 20, "the node to listen")
        fd = subprocess.Popen([FREEDIAMETERD, "-c", fd_config(tmp_path, port)],
                              stdout=fd_log, stderr=subprocess.STDOUT, cwd=str(tmp_path))

        def fd_text():
            fd_log.flush()
            return (tmp_path / "fd.log").read_text(errors="replace")

        wait_for(lambda: "STATE_WAITCEA'\t-> 'STATE_OPEN'" in fd_text(), 20, "freeDiameter to open")
        # watchdog both ways: freeDiameter's DWR answered by us, ours answered by it
        wait_for(lambda: fd_text().count("'Device-Watchdog-Answer'") >= 2, 30, "DWR/DWA both ways")
        node.send_signal(signal.SIGTERM)                  # graceful stop: DPR to freeDiameter
        assert node.wait(timeout=20) == 0
        text = fd_text()
        assert "'Disconnect-Peer-Request'" in text and "'Disconnect-Peer-Answer'" in text
        node_log.seek(0)
        ours = node_log.read()
        assert "peer fd.example.net (example.net) open" in ours
        assert "sending DPR to 1 peer" in ours and "no DPA" not in ours
        # freeDiameter found nothing wrong with what we sent
        problems = [line for line in text.splitlines()
                    if ("ERROR" in line or "FATAL" in line) and "shutdown sequence" not in line]
        assert problems == []
    finally:
        for p in (node, fd):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        node_log.close()
        fd_log.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
