"""RFC 3539 Appendix A transport watchdog, as a table, driven by `now`.

One timer, Tw = Twinit ± 2 s of jitter (Twinit >= 6 s, default 30 s). Any
received message resets it. Rows quoted from RFC 3539 App. A:

| State   | Event                     | Action                                   | Next    |
|---------|---------------------------|------------------------------------------|---------|
| INITIAL | connection up             | SetWatchdog                              | OKAY    |
| OKAY    | receive DWA               | Pending=false, SetWatchdog               | OKAY    |
| OKAY    | receive non-DWA           | SetWatchdog                              | OKAY    |
| OKAY    | Tw expires, !Pending      | SendWatchdog, SetWatchdog, Pending=true  | OKAY    |
| OKAY    | Tw expires, Pending       | Failover, SetWatchdog                    | SUSPECT |
| SUSPECT | receive any               | Pending=false if DWA, Failback, SetWd    | OKAY    |
| SUSPECT | Tw expires                | CloseConnection, SetWatchdog             | DOWN    |
| DOWN    | connection up             | NumDWA=0, SendWatchdog, SetWd, Pending   | REOPEN  |
| REOPEN  | DWA, NumDWA == 2          | Pending=false, NumDWA++, Failback        | OKAY    |
| REOPEN  | DWA, NumDWA < 2           | Pending=false, NumDWA++                  | REOPEN  |
| REOPEN  | non-DWA                   | discard                                  | REOPEN  |
| REOPEN  | Tw expires, !Pending      | SendWatchdog, SetWatchdog, Pending=true  | REOPEN  |
| REOPEN  | Tw expires, Pending, N<0  | CloseConnection, SetWatchdog             | DOWN    |
| REOPEN  | Tw expires, Pending, N>=0 | NumDWA=-1, SetWatchdog                   | REOPEN  |
| any up  | connection down           | CloseConnection (Failover from OKAY)     | DOWN    |

A connection object lives as long as its transport, so INITIAL/DOWN "attempt
open" rows belong to the reconnecting owner, which passes `reopened=True` for
a connection that replaces one that went DOWN.
"""

from __future__ import annotations

import random

TW_MINIMUM = 6.0
TW_DEFAULT = 30.0
JITTER = 2.0

INITIAL, OKAY, SUSPECT, DOWN, REOPEN = "INITIAL", "OKAY", "SUSPECT", "DOWN", "REOPEN"

# Actions returned to the connection.
SEND_DWR = "send-dwr"
FAILOVER = "failover"
FAILBACK = "failback"
CLOSE = "close"


class Watchdog:
    __slots__ = ("state", "pending", "num_dwa", "deadline", "_tw", "_rng")

    def __init__(self, tw_init: float = TW_DEFAULT, rng: random.Random | None = None):
        if tw_init < TW_MINIMUM:
            raise ValueError(f"Tw must be at least {TW_MINIMUM} s (RFC 3539 §3.4.1), got {tw_init}")
        self._tw = tw_init
        self._rng = rng or random.Random()
        self.state = INITIAL
        self.pending = False
        self.num_dwa = 0
        self.deadline: float | None = None

    def _set(self, now: float) -> None:
        self.deadline = now + self._tw + self._rng.uniform(-JITTER, JITTER)

    def connection_up(self, now: float, reopened: bool = False) -> list[str]:
        self._set(now)
        if not reopened:
            self.state = OKAY
            return []
        self.state = REOPEN
        self.num_dwa = 0
        self.pending = True
        return [SEND_DWR]

    def received(self, now: float, is_dwa: bool) -> tuple[bool, list[str]]:
        """A message arrived. Returns (deliver it?, actions)."""
        state = self.state
        if state == OKAY:
            if is_dwa:
                self.pending = False
            self._set(now)
            return True, []
        if state == SUSPECT:
            if is_dwa:
                self.pending = False
            self.state = OKAY
            self._set(now)
            return True, [FAILBACK]
        if state == REOPEN:
            if not is_dwa:
                return False, []
            self.pending = False
            if self.num_dwa == 2:
                self.num_dwa += 1
                self.state = OKAY
                self._set(now)
                return True, [FAILBACK]
            self.num_dwa += 1
            return True, []
        return False, []

    def timer(self, now: float) -> list[str]:
        """Call when now >= deadline."""
        if self.deadline is None or now < self.deadline:
            return []
        state = self.state
        if state == OKAY:
            self._set(now)
            if not self.pending:
                self.pending = True
                return [SEND_DWR]
            self.state = SUSPECT
            return [FAILOVER]
        if state == SUSPECT:
            self.state = DOWN
            self.deadline = None
            return [CLOSE]
        if state == REOPEN:
            self._set(now)
            if not self.pending:
                self.pending = True
                return [SEND_DWR]
            if self.num_dwa < 0:
                self.state = DOWN
                self.deadline = None
                return [CLOSE]
            self.num_dwa = -1
            return []
        return []

    def connection_down(self) -> list[str]:
        was = self.state
        self.state = DOWN
        self.deadline = None
        return [FAILOVER] if was == OKAY else []
