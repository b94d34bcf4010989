"""The `/metrics` view: every process's snapshot summed, plus the store's own gauges.

`read_metrics(txn, now)` is the pure part (a dict of families, used by tests and
`ocs check --metrics`); `StoreCollector` hands it to prometheus_client, whose
exposition code renders the text format; `serve_http` starts its HTTP server.

Counters and histograms are summed over every snapshot published since the
node started, including processes that have stopped or died (a worker that
is restarted does not take its predecessor's counts away: totals only grow).
Gauges are summed over live processes only: a snapshot is live while it is not
marked stopped and is younger than 2 x its interval + 3 s.
"""

from __future__ import annotations

import json
import time

from ..store.base import meta_json
from .families import COUNTER, FAMILIES, GAUGE, HISTOGRAM

PREFIX = b"metrics:"


def key(process: str) -> bytes:
    return PREFIX + process.encode()


def snapshots(txn) -> list[dict]:
    return [snap for _, snap in meta_json(txn, PREFIX) if snap is not None]


def live(snap: dict, now: float) -> bool:
    return not snap.get("stopped") and now - snap.get("at", 0) <= 2 * snap.get("interval", 1) + 3


def read_metrics(txn, now: float, map_size: int | None = None,
                 map_used: int | None = None) -> dict:
    """{name: {labels tuple: value}} for counters and gauges, and
    {name: {labels: (per-bucket counts, sum)}} for histograms."""
    out: dict[str, dict] = {name: {} for name in FAMILIES}
    workers = 0
    for snap in snapshots(txn):
        is_live = live(snap, now)
        if is_live and str(snap.get("process", "")).startswith("node-"):
            workers += 1
        for name, labels, value in snap.get("counters", ()):
            if FAMILIES.get(name, (None,))[0] == COUNTER:
                series = out[name]
                series[tuple(labels)] = series.get(tuple(labels), 0) + value
        for name, labels, counts, total in snap.get("histograms", ()):
            spec = FAMILIES.get(name)
            if spec is None or spec[0] != HISTOGRAM or len(counts) != len(spec[3]) + 1:
                continue
            series = out[name]
            old = series.get(tuple(labels))
            if old is None:
                series[tuple(labels)] = (list(counts), total)
            else:
                series[tuple(labels)] = ([a + b for a, b in zip(old[0], counts)], old[1] + total)
        if is_live:
            for name, labels, value in snap.get("gauges", ()):
                if FAMILIES.get(name, (None,))[0] == GAUGE:
                    series = out[name]
                    series[tuple(labels)] = series.get(tuple(labels), 0) + value
    out["ocs_workers"][()] = workers
    out["ocs_sessions_open"][()] = txn.count("sessions")
    out["ocs_outbox_events"][()] = txn.count("outbox")
    out["ocs_notices_queued"][()] = txn.count("notices")
    oldest = 0.0
    for _, raw in txn.items("outbox", limit=1):
        try:
            oldest = max(0.0, now - float(json.loads(bytes(raw)).get("recorded", now)))
        except (ValueError, TypeError, AttributeError):
            pass
    out["ocs_outbox_oldest_age_seconds"][()] = oldest
    if map_size is not None:
        out["ocs_store_map_size_bytes"][()] = map_size
    if map_used is not None:
        out["ocs_store_map_used_bytes"][()] = map_used
    return out


class StoreCollector:
    """A prometheus_client collector over the shared LMDB environment."""

    def __init__(self, store, clock=time.time):
        self.store, self.clock = store, clock

    def read(self) -> dict:
        with self.store.read() as txn:
            return read_metrics(txn, self.clock(), self.store.map_size, self.store.map_used_bytes())

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        values = self.read()
        for name, spec in FAMILIES.items():
            kind, doc, labels = spec[0], spec[1], list(spec[2])
            series = values[name]
            if kind == COUNTER:
                fam = CounterMetricFamily(name, doc, labels=labels)
                for lv, v in sorted(series.items()):
                    fam.add_metric(list(lv), v)
            elif kind == GAUGE:
                fam = GaugeMetricFamily(name, doc, labels=labels)
                for lv, v in sorted(series.items()):
                    fam.add_metric(list(lv), v)
            else:
                fam = HistogramMetricFamily(name, doc, labels=labels)
                bounds = spec[3]
                for lv, (counts, total) in sorted(series.items()):
                    running, buckets = 0, []
                    for bound, n in zip(list(bounds) + [float("inf")], counts):
                        running += n
                        buckets.append((_le(bound), running))
                    fam.add_metric(list(lv), buckets, total)
            yield fam


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def serve_http(store, address: str, port: int):
    """Start the /metrics HTTP server in a daemon thread; (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return start_http_server(port, addr=address, registry=registry)
