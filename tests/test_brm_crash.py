"""The BRM gateway killed with SIGKILL at random moments, on SQLite and PostgreSQL.

10,000 rated events wait in a real LMDB outbox. `python -m ocs brm-gateway` runs as a
subprocess with batches of 50 (200 commit points) and is killed after a random number
of batches plus a random few milliseconds, so kills land anywhere in a batch: reading
the outbox, inserting, committing the master, deleting from the outbox. After every
kill nothing may be missing (each event is in the master or still in the outbox); at
the end the master holds each event exactly once with the outbox's body, and the
outbox is empty. The seed is printed (override: OCS_CRASH_SEED).
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

from ocs.charging.ledger import append_events
from ocs.gateways.master import connect
from ocs.store.lmdb import LmdbStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENTS, BATCH, KILLS = 10_000, 50, 8
T0 = 1759276800
BATCH_LINE = re.compile(r"batch outbox (\d+)\.\.(\d+): (\d+) delivered, (\d+) already present")


def fill_outbox(path: str, n: int) -> dict:
    """n realistic usage events (as quota.Run.event writes them); event id -> stored JSON."""
    with LmdbStore(path) as store:
        for first in range(0, n, 1000):
            chunk = [{"type": "usage", "account": f"acct-{i % 97}", "identity": f"e164:4670{i % 97:05d}",
                      "session": f"pgw;1;{i // 4}", "request_number": i % 4, "request_type": 2,
                      "context": "32251@3gpp.org", "rating_group": 10, "service_id": None,
                      "start": T0 + i, "end": T0 + i + 30, "units": {"total_octets": 1024 * (i % 7 + 1)},
                      "plan": "mobile", "rate": {"price": 2, "per": 1048576, "rounding": 1024},
                      "amount": i % 5, "currency": "EUR", "impacts": [["main", -(i % 5)]],
                      "unpaid": i % 11 == 0 and 3 or 0, "balance_after": {"money": 10**6 - i}}
                     for i in range(first, min(n, first + 1000))]
            store.write(lambda t: append_events(t, chunk, T0 + 3600))
        with store.read() as t:
            return {_id(v): bytes(v).decode() for _, v in t.items("outbox")}


def _id(raw) -> str:
    import json
    return json.loads(bytes(raw))["event_id"]


def outbox_ids(path: str) -> set:
    with LmdbStore(path) as store, store.read() as t:
        return {_id(v) for _, v in t.items("outbox")}


def master_rows(url: str) -> dict:
    m = connect(url)
    try:
        with m.transaction(snapshot=True) as cur:
            return dict(cur.all("SELECT event_id, body FROM rated_events"))
    finally:
        m.close()


def gateway(tmp_path, url: str, *extra: str) -> subprocess.Popen:
    cfg = tmp_path / "ocs.toml"
    cfg.write_text(f'[brm]\nbatch = {BATCH}\npoll_interval = 0.05\nsnapshot_interval = 0\n'
                   '[log]\nlevel = "info"\n')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "ocs", "brm-gateway", "--config", str(cfg),
                             "--store", str(tmp_path / "lmdb"), "--master", url, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(tmp_path))


def batches_until(proc: subprocess.Popen, wanted: int, lines: list) -> None:
    """Read the gateway's log until it has logged ``wanted`` batches (or exited)."""
    seen = 0
    while seen < wanted:
        line = proc.stderr.readline()
        if not line:
            return
        lines.append(line)
        seen += bool(BATCH_LINE.search(line))


def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path, master_url):
    seed = int(os.environ.get("OCS_CRASH_SEED", "20251125"))
    rng = random.Random(seed)
    print(f"\nbrm crash test: seed {seed} (OCS_CRASH_SEED), {EVENTS} events, batches of {BATCH}")
    m = connect(master_url)
    m.migrate()
    m.close()
    lmdb = str(tmp_path / "lmdb")
    bodies = fill_outbox(lmdb, EVENTS)
    assert len(bodies) == EVENTS
    lines: list = []
    after_kill = []
    for k in range(KILLS):
        proc = gateway(tmp_path, master_url)
        batches_until(proc, rng.randint(1, 24), lines)
        time.sleep(rng.uniform(0, 0.012))
        proc.send_signal(signal.SIGKILL)
        lines += proc.stderr.read().splitlines(keepends=True)
        assert proc.wait() == -signal.SIGKILL, "".join(lines[-20:])
        in_master, waiting = master_rows(master_url), outbox_ids(lmdb)
        assert set(in_master) | waiting == set(bodies), f"kill {k}: events lost"
        assert set(in_master) <= set(bodies), f"kill {k}: events the outbox never held"
        after_kill.append((len(in_master), len(waiting), len(set(in_master) & waiting)))
    final = gateway(tmp_path, master_url, "--once")
    out, err = final.communicate(timeout=300)
    lines += err.splitlines(keepends=True)
    assert final.returncode == 0, err
    batches = [tuple(map(int, b.groups())) for b in map(BATCH_LINE.search, lines) if b]
    absorbed = sum(b[3] for b in batches)
    print(f"after each kill (in master, in outbox, in both): {after_kill}")
    print(f"{len(batches)} batches logged, {absorbed} re-deliveries absorbed by ON CONFLICT; "
          f"last run: {out.strip()}")
    assert any(0 < n < EVENTS for n, _, _ in after_kill), "no kill landed mid-delivery"
    rows = master_rows(master_url)
    assert rows == bodies                      # each id once (primary key), same body, no others
    assert outbox_ids(lmdb) == set()
    # every event left in both places by a kill was offered again and absorbed
    assert absorbed >= sum(both for _, _, both in after_kill)


def test_sigterm_stops_between_batches(tmp_path, master_url):
    m = connect(master_url)
    m.migrate()
    m.close()
    lmdb = str(tmp_path / "lmdb")
    bodies = fill_outbox(lmdb, 3000)
    proc = gateway(tmp_path, master_url)
    lines: list = []
    batches_until(proc, 3, lines)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, err
    assert "stopped:" in err
    in_master, waiting = set(master_rows(master_url)), outbox_ids(lmdb)
    assert in_master | waiting == set(bodies) and not in_master & waiting   # a whole batch or none
    assert len(in_master) % BATCH == 0 and len(in_master) >= 3 * BATCH


KILLER = """
import os, signal, sys
from ocs.cli import main
from ocs.gateways import billing, invoice_html
point, calls = sys.argv[1], []
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "staging":              # the 3rd account's files are being written: not committed
    real_html = invoice_html.invoice_html
    def html(inv):
        calls.append(1)
        if len(calls) == 3:
            die()
        return real_html(inv)
    invoice_html.invoice_html = html
elif point == "committed":          # after the commit, before the rename
    billing.publish_cycle = lambda *a: die()
elif point == "renamed":            # after the rename, before the run is marked finished
    real_publish = billing.publish_cycle
    def publish(*a):
        real_publish(*a)
        die()
    billing.publish_cycle = publish
sys.exit(main(sys.argv[2:]))
"""


def folder_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_bill_killed_anywhere_is_finished_by_the_next_bill(tmp_path, master_url):
    """`ocs bill` SIGKILLed while writing its files, between its commit and the rename, and
    between the rename and marking the run finished: the next `ocs bill` (no --rerun) leaves
    the master and the files in agreement, every file whole, no leftovers; a recorded run is
    finished as it was recorded (files already in place are kept byte for byte)."""
    import json
    from ocs.gateways import brm
    m = connect(master_url)
    m.migrate()
    lmdb, out = str(tmp_path / "lmdb"), tmp_path / "inv"
    fill_outbox(lmdb, 500)
    with LmdbStore(lmdb) as store:
        brm.drain(store, m, 1000)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["bill", "--cycle", "2025-10", "--master", master_url, "--store", lmdb, "--out", str(out)]

    def run(*cmd):
        return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=120)

    def runs():
        with m.transaction(snapshot=True) as cur:
            return [tuple(r) for r in cur.all("SELECT id, finished_at FROM bill_runs")]
    try:
        for point, recorded, finish in [("staging", False, "billed"),
                                        ("committed", True, "finished the interrupted bill run of"),
                                        ("renamed", True, "finished the interrupted bill run of")]:
            if point != "staging":
                assert run("-m", "ocs", *args, "--rerun").returncode == 0
            before = runs()
            killed = run("-c", KILLER, point, *args, *(["--rerun"] if before else []))
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            after = runs()
            assert (after != before) == recorded, point
            if recorded:
                assert after[0][1] is None                           # unfinished
            published = folder_bytes(out / "2025-10")
            done = run("-m", "ocs", *args)
            assert done.returncode == 0 and done.stdout.startswith(f"{finish} 2025-10: 97 invoices"), (
                point, done.stdout, done.stderr)
            (run_id, finished), = runs()
            assert finished is not None and (not recorded or run_id == after[0][0])   # unchanged
            if point == "renamed":              # already in place: the published files stay as they are
                assert folder_bytes(out / "2025-10") == published
            assert sorted(os.listdir(out)) == ["2025-10"]                   # no leftovers
            files = os.listdir(out / "2025-10")
            assert len(files) == 3 * 97 + 2
            assert (out / "2025-10" / "bill_run.txt").read_text() == run_id + "\n"
            for name in files:
                if name.endswith(".json"):
                    assert json.loads((out / "2025-10" / name).read_text())["bill_run_id"] == run_id
    finally:
        m.close()
