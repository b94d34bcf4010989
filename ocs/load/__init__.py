"""Gy credit-control load generator: throughput and latency of a node over TCP.

    ocs load --host 127.0.0.1 --port 3868                        # 10 s, as fast as possible
    ocs load --config ocs.toml --rate 10000 --duration 30         # paced, for latency at a rate
    ocs load --requests 100000 --processes 2 --json               # 2 driver processes, JSON out

(the same flags: `python3 -m ocs.load ...`, `python3 tools/loadgen.py ...`).

Loopback only: it floods its target, so it refuses (exit status 2) a `--host`
that is not a loopback address (127.0.0.0/8, ::1) or `localhost`.

It is a Diameter client of its own, kept cheap per request so that it is not
the bottleneck: a raw asyncio.Protocol per connection (not the node's
DiameterConnection), no task or future per request, requests written from
pre-encoded templates and answers read by a header + Result-Code scan.

Connections: `--connections` in all (spread over `--processes`), each with its
own Origin-Host `load{n}.localdomain`. Each sends a CER (Auth-Application-Id 4)
and waits for CEA 2001; DWR from the node is answered with DWA, DPR with DPA;
at the end each connection sends DPR, waits briefly for DPA and closes.

Workload: `--sessions` concurrent Gy sessions in all, spread over the
connections. A session is CCR-INITIAL (CC-Request-Number 0), `--updates`
CCR-UPDATEs (1..U) and CCR-TERMINATION (U+1); each request waits for its
answer before the session's next one, and a finished session's slot starts a
new Session-Id at once. With `--event-ratio F`, a fraction F of the sessions
started are a single CCR-EVENT instead (CC-Request-Type 4, Requested-Action
DIRECT_DEBITING, Service-Context-Id 32274@3gpp.org, RSU {CC-Service-Specific-
Units 1}). Subscription-Id is END_USER_E164 with data `--subscriber-prefix`
+ index zero-padded to `--subscriber-digits`, the index taken round-robin (or
at random) over `--subscribers` (each process gets its own slice).

Messages: per connection and request type, one CCR is built with the ocs
codec at start-up; each request copies it and patches the Hop-by-Hop and
End-to-End ids, the fixed-width session counter at the end of the Session-Id,
CC-Request-Number and the fixed-width subscriber digits. At start-up every
template is patched once and decoded with the full grammar check to prove the
offsets. The Session-Id is `load{n}.localdomain;{start ms mod 2^32};{12-digit
counter}`.

Bounds: `--requests N` (requests sent in all) and/or `--duration T` seconds
(10 s when neither is given). When a bound is reached no new request is sent;
the outstanding ones are waited for (at most `--timeout`) and sessions then
still open are left open on the node. If no answer arrives for `--timeout`
seconds while requests are outstanding, the run stops and counts them as
unanswered.

Pacing: without `--rate` every session sends its next request as soon as the
previous answer arrives (closed loop: `--sessions` requests in flight). With
`--rate R` sends are released by a 1 ms ticker to keep R requests/s in all
(a session still waits for its own answer; latency is measured from the send,
so a node slower than R shows as an achieved rate below R).

Output: requests, answers by Result-Code (command level: Result-Code or
Experimental-Result-Code; and the MSCC-level Result-Codes), CCR/s (answers in
the measured window / its length, from the first send, or the end of
`--warmup`, to the last answer) and latency p50/p95/p99/max per request type in
ms. Progress once a second on stderr (`--quiet` to silence). `--json` prints
the result as JSON.

Modules: common (LoadOptions, wire constants), templates (the CCR templates),
protocol (one connection), driver (the workload of one process), procs
(run_load, the driver processes), report (merge, format_result), cli (the
command line).

API: `LoadOptions` (the CLI options as fields), `async run_load(options) ->
dict` (a LoadOptions or a dict of its fields) and `main(argv) -> int`.
"""

from __future__ import annotations

import importlib

# imported on first use, so that `ocs` (whose parser adds `ocs load`) does not pay for
# asyncio, multiprocessing and the codec on every command
_WHERE = {
    "main": "cli", "options_from_args": "cli",
    "Driver": "driver", "Stats": "driver",
    "partition": "procs", "run_load": "procs",
    "LoadConnection": "protocol", "Slot": "protocol",
    "format_result": "report", "merge": "report",
    "CcrTemplate": "templates", "build_templates": "templates", "verify_template": "templates",
}
for _name in (
        "AVP_CC_REQUEST_NUMBER", "AVP_EXPERIMENTAL_RESULT", "AVP_EXPERIMENTAL_RESULT_CODE", "AVP_MSCC",
        "AVP_RESULT_CODE", "AVP_SESSION_ID", "AVP_SUBSCRIPTION_ID", "AVP_SUBSCRIPTION_ID_DATA",
        "CC_REQUEST_TYPE", "CMD_CC", "CMD_CER", "CMD_DPR", "CMD_DWR", "K_E", "K_I", "K_T", "K_U", "KINDS",
        "SESSION_DIGITS", "LoadOptions", "is_loopback"):
    _WHERE[_name] = "common"

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
