"""Every metric the node exports: name, type, help text, label names (and buckets).

Names follow the Prometheus conventions: `ocs_` prefix, base units (seconds,
bytes), `_total` on counters. docs/metrics.md lists them with examples; the
Grafana dashboard (tools/grafana/ocs.json) plots them.
"""

from __future__ import annotations

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# name: (type, help, label names[, buckets])
FAMILIES: dict[str, tuple] = {
    # ---- counted by each worker (summed over workers) ----
    "ocs_diameter_requests_total": (
        COUNTER, "Diameter requests received, by command and CC-Request-Type",
        ("command", "request_type")),
    "ocs_diameter_answers_total": (
        COUNTER, "Diameter answers sent, by request command, CC-Request-Type and Result-Code",
        ("command", "request_type", "result_code")),
    "ocs_diameter_request_duration_seconds": (
        HISTOGRAM, "Time from a credit-control request read to its answer (after the commit)",
        ("command", "request_type"), LATENCY_BUCKETS),
    "ocs_granted_units_total": (
        COUNTER, "Units granted (Granted-Service-Unit), by Service-Context-Id and unit type",
        ("service", "unit")),
    "ocs_used_units_total": (
        COUNTER, "Units reported used (Used-Service-Unit), by Service-Context-Id and unit type",
        ("service", "unit")),
    "ocs_store_commit_batch_size": (
        HISTOGRAM, "Transactions per group commit", (), BATCH_BUCKETS),
    "ocs_store_commit_duration_seconds": (
        HISTOGRAM, "Time to run and commit one group-commit batch (fsync included)",
        (), LATENCY_BUCKETS),
    "ocs_store_speculations_total": (
        COUNTER, "CCRs decided outside the write lock, by outcome: applied, conflict "
                 "(decided again inside), unsupported", ("outcome",)),
    "ocs_notices_sent_total": (
        COUNTER, "RAR/ASR sent for notices queued by the EM gateway, by command", ("command",)),
    "ocs_notice_answers_total": (
        COUNTER, "Answers to the RAR/ASR sent, by command and Result-Code (or timeout, closed)",
        ("command", "result_code")),
    "ocs_notices_dropped_total": (
        COUNTER, "Notices not sent: the session's peer was not connected or not OKAY", ()),
    "ocs_em_gateway_changes_applied_total": (
        COUNTER, "Master-database changes applied to the cache by the EM gateway", ()),
    "ocs_brm_gateway_events_delivered_total": (
        COUNTER, "Rated events delivered to the master database by the BRM gateway", ()),
    # ---- gauges of live processes (summed over them) ----
    "ocs_peer_up": (
        GAUGE, "1 per open peer connection, with its watchdog state (RFC 3539)",
        ("peer", "watchdog")),
    "ocs_pending_requests": (
        GAUGE, "Credit-control requests waiting for their group commit", ()),
    "ocs_workers": (GAUGE, "Serving worker processes alive", ()),
    "ocs_em_gateway_lag_seconds": (
        GAUGE, "Age of the newest master change the EM gateway has applied when it is "
               "behind, 0 when caught up", ()),
    "ocs_em_gateway_cursor": (GAUGE, "Last master change number applied to the cache", ()),
    # ---- read from the store at scrape time ----
    "ocs_sessions_open": (GAUGE, "Credit-control sessions open in the cache", ()),
    "ocs_outbox_events": (GAUGE, "Rated events waiting in the outbox for the BRM gateway", ()),
    "ocs_outbox_oldest_age_seconds": (
        GAUGE, "Age of the oldest rated event in the outbox (BRM gateway lag), 0 if empty", ()),
    "ocs_notices_queued": (GAUGE, "RAR/ASR notices queued for open sessions", ()),
    "ocs_store_map_size_bytes": (GAUGE, "Size of the LMDB map ([store] map_size)", ()),
    "ocs_store_map_used_bytes": (GAUGE, "Bytes of the LMDB map in use", ()),
}
