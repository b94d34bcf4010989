"""Prometheus metrics of the node and its gateways, correct across processes.

Each process counts into its own `Tally` (plain dicts: nanoseconds on the hot
path) and publishes a snapshot of it into the shared LMDB environment every
`[metrics] interval` seconds (`metrics:<process>` in `meta`). The process that
serves `/metrics` (the node, or the supervisor of `ocs serve --workers N`) sums
the snapshots of every process that ran since the node started, adds what it
reads from the store itself (sessions, outbox, map usage, gateway lag) and
renders them with prometheus_client. See docs/metrics.md.
"""
