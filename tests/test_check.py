"""`ocs check` (the container HEALTHCHECK) against a real `ocs serve` process: it fails
when no node has served the store, passes while one serves it, and fails again once the
node is down, whether it stopped cleanly or was killed (its heartbeat goes stale)."""

import signal
import subprocess
import sys
import time

from charging_peer import OcsProcess
from test_serve import REPO


def check(store: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocs", "check", "--store", store, *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_check_follows_the_node(tmp_path):
    node = OcsProcess(tmp_path)                     # provisions the store, not yet serving
    r = check(node.store)
    assert r.returncode == 1 and "no heartbeat" in r.stderr, r
    r = check(str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "no store at" in r.stderr, r
    node.start()
    try:
        deadline = time.monotonic() + 10
        while (r := check(node.store)).returncode != 0:
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.1)
        assert r.stdout.startswith("ok: 1 serving process(es); pid ") and f":{node.port}" in r.stdout
    finally:
        assert node.stop() == 0
    r = check(node.store)                           # a clean stop removes its heartbeat
    assert r.returncode == 1 and "no node is serving it" in r.stderr, r
    node.start()
    try:
        deadline = time.monotonic() + 10
        while check(node.store).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        node.proc.send_signal(signal.SIGKILL)       # no clean stop: the heartbeat stays, ages
        node.proc.wait(10)
        r = check(node.store, "--max-age", "1")
        deadline = time.monotonic() + 10
        while r.returncode == 0:
            assert time.monotonic() < deadline, "a dead node still looks alive"
            time.sleep(0.2)
            r = check(node.store, "--max-age", "1")
        assert "the node is down or stuck" in r.stderr, r
    finally:
        node.stop()


def test_check_counts_every_worker(tmp_path):
    node = OcsProcess(tmp_path, workers=2).start()
    try:
        deadline = time.monotonic() + 10
        while not (r := check(node.store)).stdout.startswith("ok: 2 serving process(es)"):
            assert time.monotonic() < deadline, (r.stdout, r.stderr)
            time.sleep(0.1)
    finally:
        assert node.stop() == 0
    r = check(node.store)                           # every worker removed its heartbeat
    assert r.returncode == 1 and "no node is serving it" in r.stderr, r
