"""One process's metrics: plain counters and histograms, and their snapshot.

`Tally` is what the hot path touches: `inc` and `observe` are a dict lookup and
an add (no locks, no label objects). `snapshot()` turns it into a JSON-able
record that `ocs.metrics.collect` sums over processes:

    {"v": 1, "process": "node-1234-1764...", "pid": 1234, "at": <unix s>,
     "interval": 1.0, "stopped": false,
     "counters": [[name, [label values], value], ...],
     "gauges":   [[name, [label values], value], ...],
     "histograms": [[name, [label values], [count per bucket..., +Inf], sum], ...]}

Histogram buckets are per bucket here (not cumulative); the collector makes
them cumulative for the exposition.
"""

from __future__ import annotations

from bisect import bisect_left

from .families import FAMILIES

VERSION = 1


class Tally:
    __slots__ = ("counters", "histograms", "gauges")

    def __init__(self) -> None:
        self.counters: dict[tuple, int | float] = {}
        self.histograms: dict[tuple, list] = {}
        self.gauges: dict[tuple, int | float] = {}

    def inc(self, name: str, labels: tuple = (), n: int | float = 1) -> None:
        key = (name, labels)
        c = self.counters
        c[key] = c.get(key, 0) + n

    def observe(self, name: str, labels: tuple, value: float) -> None:
        key = (name, labels)
        h = self.histograms.get(key)
        if h is None:
            bounds = FAMILIES[name][3]
            h = self.histograms[key] = [bounds, [0] * (len(bounds) + 1), 0.0]
        # le semantics: a value equal to a bound falls in that bound's bucket
        h[1][bisect_left(h[0], value)] += 1
        h[2] += value

    def set(self, name: str, labels: tuple, value: int | float) -> None:
        self.gauges[(name, labels)] = value

    def snapshot(self, process: str, pid: int, at: float, interval: float, stopped: bool = False,
                 gauges: dict | None = None) -> dict:
        """The record to publish; `gauges` (name, labels) -> value are added to the
        tally's own gauges (values read at publish time: peers, queue depth)."""
        all_gauges = dict(self.gauges)
        if gauges:
            all_gauges.update(gauges)
        return {
            "v": VERSION, "process": process, "pid": pid, "at": round(at, 3),
            "interval": interval, "stopped": stopped,
            "counters": [[n, list(lv), v] for (n, lv), v in self.counters.items()],
            "gauges": [[n, list(lv), v] for (n, lv), v in all_gauges.items()],
            "histograms": [[n, list(lv), list(h[1]), h[2]]
                           for (n, lv), h in self.histograms.items()],
        }

