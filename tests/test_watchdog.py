"""RFC 3539 Appendix A watchdog table, row by row."""

import random

import pytest

from ocs.diameter import watchdog as wd


def make(tw=30.0):
    return wd.Watchdog(tw, random.Random(3))


def test_tw_minimum_is_6_seconds():
    with pytest.raises(ValueError):
        wd.Watchdog(5.9)
    wd.Watchdog(6.0)


def test_jitter_within_two_seconds():
    w = make()
    for i in range(200):
        w.connection_up(100.0)
        assert 128.0 <= w.deadline <= 132.0


def test_okay_rows():
    w = make()
    assert w.connection_up(0.0) == [] and w.state == wd.OKAY          # INITIAL -> OKAY
    assert w.timer(w.deadline - 0.1) == []
    assert w.timer(w.deadline) == [wd.SEND_DWR] and w.pending         # !Pending: DWR
    assert w.received(40.0, is_dwa=True) == (True, []) and not w.pending
    w.timer(w.deadline)                                               # DWR again
    assert w.timer(w.deadline) == [wd.FAILOVER] and w.state == wd.SUSPECT
    assert w.received(100.0, is_dwa=False) == (True, [wd.FAILBACK]) and w.state == wd.OKAY


def test_suspect_expiry_closes():
    w = make()
    w.connection_up(0.0)
    w.timer(w.deadline)
    w.timer(w.deadline)
    assert w.timer(w.deadline) == [wd.CLOSE] and w.state == wd.DOWN


def test_reopen_needs_three_dwas_and_discards_other_traffic():
    w = make()
    assert w.connection_up(0.0, reopened=True) == [wd.SEND_DWR] and w.state == wd.REOPEN
    assert w.received(1.0, is_dwa=False) == (False, [])               # non-DWA discarded
    assert w.received(1.0, is_dwa=True) == (True, [])
    assert w.received(2.0, is_dwa=True) == (True, [])
    assert w.received(3.0, is_dwa=True) == (True, [wd.FAILBACK]) and w.state == wd.OKAY


def test_reopen_timeouts():
    w = make()
    w.connection_up(0.0, reopened=True)                               # Pending, NumDWA=0
    assert w.timer(w.deadline) == [] and w.num_dwa == -1              # NumDWA >= 0 -> -1
    assert w.timer(w.deadline) == [wd.CLOSE] and w.state == wd.DOWN   # NumDWA < 0 -> DOWN


def test_connection_down_from_okay_fails_over():
    w = make()
    w.connection_up(0.0)
    assert w.connection_down() == [wd.FAILOVER] and w.state == wd.DOWN
