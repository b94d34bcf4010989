"""Bill runs whose files fail: account ids too long for a file name, a full disk, and a run
interrupted between its commit and its files (finished by the next bill). SQLite and
PostgreSQL, on the data set of test_billing.py."""

import csv
import errno
import json
import os

import shutil

import pytest

import test_billing
from ocs.charging.ledger import Ledger
from ocs.cli import main
from ocs.gateways import billing, brm
from ocs.gateways.billing import BillingError, bill
from test_billing import DAY, NOV, OCT, invoices_in_master

world = test_billing.world           # the fixture


def test_file_names_are_bounded_and_distinct():
    from ocs.gateways.invoice_render import STEM_MAX, file_stem
    assert [file_stem(a) for a in ("alice", "kund-7", "a/b", "a b", "x@y.org")] == [
        "alice", "kund-7", "a%2Fb", "a%20b", "x@y.org"]
    long = ["kund-" + "å" * 60, "kund-" + "å" * 60 + "x", "k" * 101, "k" * 200]
    odd = ["", "summary", "Summary", ".hidden", "..", "%00"]
    stems = [file_stem(a) for a in long + odd]
    assert len(set(stems)) == len(stems)
    for a, s in zip(long + odd, stems):
        assert 0 < len(s.encode()) <= STEM_MAX and "/" not in s and not s.startswith("."), (a, s)
        assert s.lower() != "summary"
    assert stems[0].startswith("kund-%C3%A5") and "," in stems[0] and len(stems[0]) < 70
    assert file_stem("k" * 100) == "k" * 100 and file_stem("%00") == "%2500"


def test_an_account_id_too_long_for_a_file_name_is_billed(world, tmp_path, capsys):
    """'kund-' + 60 x 'å' percent-encodes to 365 bytes: more than a file name may hold."""
    store, master = world
    long_id = "kund-" + "å" * 60
    master.put_account(long_id, "basic")
    master.put_account("summary", "basic")
    for pid, acc in (("pay-long", long_id), ("pay-summary", "summary")):
        master.add_adjustment(pid, acc, 300)
        with master.transaction() as cur:
            cur.execute("UPDATE adjustments SET created_at = ? WHERE id = ?", (OCT + 3 * DAY, pid))
    out = str(tmp_path / "inv")
    assert main(["bill", "--cycle", "2025-10", "--master", master.url, "--out", out]) == 0
    assert "billed 2025-10: 5 invoices" in capsys.readouterr().out
    folder = tmp_path / "inv" / "2025-10"
    with open(folder / "summary.csv", newline="") as f:
        files = {r["account_id"]: r["file"] for r in csv.DictReader(f)}
    assert files["alice"] == "alice" and len(files) == 5
    for acc in (long_id, "summary"):
        assert files[acc] != acc and json.loads((folder / f"{files[acc]}.json").read_text())[
            "account"]["id"] == acc
    assert max(len(p.name.encode()) for p in folder.iterdir()) <= 105


def test_a_write_failure_records_nothing_and_says_so_in_one_line(world, tmp_path, capsys, monkeypatch):
    """Invoice files fail (a file where the folder should be, the disk full): the bill run is
    not recorded, nothing is left behind, and the same command works once the cause is gone."""
    store, master = world
    blocker = tmp_path / "inv"
    blocker.write_text("not a folder")
    args = ["bill", "--cycle", "2025-10", "--master", master.url, "--out", str(blocker)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ocs: 2025-10 not billed: [Errno 17] File exists") and err.count("\n") == 1
    assert invoices_in_master(master) == ({}, [], [])
    blocker.unlink()
    from ocs.gateways import invoice_render

    def disk_full(inv):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(invoice_render, "invoice_csv", disk_full)
    assert main(args) == 2
    assert capsys.readouterr().err == "ocs: 2025-10 not billed: [Errno 28] No space left on device\n"
    assert invoices_in_master(master) == ({}, [], []) and os.listdir(blocker) == []
    monkeypatch.undo()
    assert main(args) == 0 and "billed 2025-10: 3 invoices" in capsys.readouterr().out
    assert sorted(os.listdir(blocker)) == ["2025-10"]


def test_a_run_interrupted_before_its_files_were_in_place_is_finished_by_the_next(world, tmp_path,
                                                                                monkeypatch, capsys):
    """Killed (or the rename failing) after the commit: the run is recorded unfinished with its
    files staged; the next bill of the cycle puts them in place, or, staging gone, bills anew."""
    store, master = world
    out = str(tmp_path / "inv")
    folder = tmp_path / "inv" / "2025-10"

    def killed(*args):
        raise KeyboardInterrupt("SIGKILL")
    monkeypatch.setattr(billing, "publish_cycle", killed)
    with pytest.raises(KeyboardInterrupt):
        bill(master, "2025-10", out, now=NOV + DAY)
    monkeypatch.undo()
    invs, lines, runs = invoices_in_master(master)
    with master.transaction(snapshot=True) as cur:
        assert cur.one("SELECT finished_at FROM bill_runs")[0] is None
    assert not folder.exists() and len(invs) == 3
    done = bill(master, "2025-10", out, now=NOV + 2 * DAY)
    assert done["recovered"] and not done["replaced"] and done["run_id"] == runs[0][0]
    assert done["invoices"] == 3 and done["total"] == 103 + 180
    assert invoices_in_master(master) == (invs, lines, runs)
    assert json.loads((folder / "alice.json").read_text())["bill_run_id"] == runs[0][0]
    assert os.listdir(out) == ["2025-10"]
    with pytest.raises(BillingError, match="already billed"):     # finished now
        bill(master, "2025-10", out, now=NOV + 3 * DAY)

    def rename_fails(*args):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(billing, "publish_cycle", rename_fails)
    args = ["bill", "--cycle", "2025-10", "--master", master.url, "--out", out, "--rerun"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is recorded but its files are not in place" in err and err.count("\n") == 1
    monkeypatch.undo()
    assert [p for p in os.listdir(out) if p.startswith(".")]         # staged
    assert main(args[:-1]) == 0
    assert "finished the interrupted bill run of 2025-10: 3 invoices" in capsys.readouterr().out
    with master.transaction(snapshot=True) as cur:
        assert cur.one("SELECT finished_at FROM bill_runs")[0] is not None
    # killed again (a re-run), and its staged folder lost too (e.g. billed into another --out):
    # the run as recorded is written again from its invoices and lines, not billed afresh
    monkeypatch.setattr(billing, "publish_cycle", killed)
    with pytest.raises(KeyboardInterrupt):
        bill(master, "2025-10", out, rerun=True, now=NOV + 4 * DAY)
    monkeypatch.undo()
    recorded = invoices_in_master(master)
    again = bill(master, "2025-10", str(tmp_path / "elsewhere"), now=NOV + 5 * DAY)
    assert again["recovered"] and again["rebuilt"] and not again["replaced"]
    assert again["run_id"] == f"BR-2025-10-{NOV + 4 * DAY}" and again["total"] == 103 + 180
    assert invoices_in_master(master) == recorded and recorded[2] == [(again["run_id"], "2025-10", 3)]
    assert (tmp_path / "elsewhere" / "2025-10" / "bob.html").exists()


def folder_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_published_run_is_never_billed_again_without_rerun(world, tmp_path, monkeypatch, capsys):
    """Killed after its folder was renamed into place, before it was marked finished: the next
    bill keeps the published files (a late event does not change them); with the folder gone
    too, it writes them again from the RECORDED run, byte for byte, not from the events."""
    store, master = world
    out, folder = tmp_path / "inv", tmp_path / "inv" / "2025-10"
    real = billing.publish_cycle

    def renamed_then_killed(*args):
        real(*args)
        raise KeyboardInterrupt("SIGKILL")
    args = ["bill", "--cycle", "2025-10", "--master", master.url, "--out", str(out)]
    for rerun, late in ((False, "e164:4670001"), (True, "e164:4670004")):
        monkeypatch.setattr(billing, "publish_cycle", renamed_then_killed)
        with pytest.raises(KeyboardInterrupt):
            bill(master, "2025-10", str(out), rerun=rerun, now=NOV + (2 + rerun) * DAY)
        monkeypatch.undo()
        published, recorded = folder_bytes(folder), invoices_in_master(master)
        run_id = recorded[2][0][0]
        assert published["bill_run.txt"] == f"{run_id}\n".encode()
        # a late event (e.g. offline usage) in the cycle: a new bill run would show it
        test_billing.session(store, Ledger(), f"late-{rerun}", late, OCT + 25 * DAY, 40000)
        assert brm.deliver(store, master, 100)[0] == 1
        if rerun:                       # the published folder lost as well
            shutil.rmtree(folder)
        assert main(args) == 0
        said = capsys.readouterr().out
        assert said.startswith(f"finished the interrupted bill run of 2025-10: {len(recorded[0])} "
                               f"invoices, bill run {run_id}"), said
        assert ("written again from its recorded invoices" in said) == rerun
        assert folder_bytes(folder) == published and invoices_in_master(master) == recorded
        with master.transaction(snapshot=True) as cur:
            assert cur.one("SELECT finished_at FROM bill_runs")[0] is not None
        assert sorted(os.listdir(out)) == ["2025-10"]
    # the re-run has alice's late event: 82 + 40 = 122, VAT 30.5 -> 31: 153; not dave's (later)
    assert json.loads(published["alice.json"])["total"] == 153 and "dave.json" not in published


def test_a_recorded_run_whose_payments_changed_is_not_written_again(world, tmp_path, monkeypatch):
    store, master = world

    def killed(*args):
        raise KeyboardInterrupt("SIGKILL")
    monkeypatch.setattr(billing, "publish_cycle", killed)
    with pytest.raises(KeyboardInterrupt):
        bill(master, "2025-10", str(tmp_path / "inv"), now=NOV + DAY)
    monkeypatch.undo()
    master.add_adjustment("pay-a2", "alice", 300)
    with master.transaction() as cur:               # recorded back in October, after the run
        cur.execute("UPDATE adjustments SET created_at = ? WHERE id = 'pay-a2'", (OCT + 9 * DAY,))
    with pytest.raises(BillingError, match="payments of account alice in 2025-10 are not those "
                                           "recorded any more; bill it with --rerun"):
        bill(master, "2025-10", str(tmp_path / "elsewhere"), now=NOV + 2 * DAY)
    assert not (tmp_path / "elsewhere" / "2025-10").exists()
    again = bill(master, "2025-10", str(tmp_path / "elsewhere"), rerun=True, now=NOV + 3 * DAY)
    assert invoices_in_master(master)[0]["alice"][11] == 2000 + 300 and again["replaced"]
