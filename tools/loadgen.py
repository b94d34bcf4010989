#!/usr/bin/env python3
"""Gy credit-control load generator: throughput and latency of a node over TCP.

    python3 tools/loadgen.py --host 127.0.0.1 --port 3868            # 10 s, as fast as possible
    python3 tools/loadgen.py --rate 10000 --duration 30               # paced, for latency at a rate
    python3 tools/loadgen.py --requests 100000 --processes 2 --json   # 2 driver processes, JSON out

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

API: `LoadOptions` (the CLI options as fields), `async run_load(options) ->
dict` (a LoadOptions or a dict of its fields) and `main(argv) -> int`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:                # the loadgen_* modules next to this file
    sys.path.insert(0, _HERE)

# the implementation lives in the loadgen_* modules; re-exported here so that
# `import loadgen` / `from loadgen import ...` keep working
from loadgen_common import (  # noqa: E402
    AVP_CC_REQUEST_NUMBER, AVP_EXPERIMENTAL_RESULT, AVP_EXPERIMENTAL_RESULT_CODE, AVP_MSCC,
    AVP_RESULT_CODE, AVP_SESSION_ID, AVP_SUBSCRIPTION_ID, AVP_SUBSCRIPTION_ID_DATA, CC_REQUEST_TYPE,
    CMD_CC, CMD_CER, CMD_DPR, CMD_DWR, K_E, K_I, K_T, K_U, KINDS, SESSION_DIGITS, LoadOptions)
from loadgen_driver import Driver, Stats  # noqa: E402
from loadgen_procs import _run_part, _run_processes, partition  # noqa: E402
from loadgen_protocol import LoadConnection, Slot  # noqa: E402
from loadgen_report import format_result, merge  # noqa: E402
from loadgen_templates import CcrTemplate, build_templates, verify_template  # noqa: E402

__all__ = [
    "LoadOptions", "run_load", "main", "options_from_args", "build_templates", "verify_template",
    "CcrTemplate", "partition", "merge", "format_result", "Driver", "Stats", "LoadConnection", "Slot",
    "KINDS", "K_I", "K_U", "K_T", "K_E", "CC_REQUEST_TYPE", "SESSION_DIGITS",
    "CMD_CER", "CMD_DWR", "CMD_DPR", "CMD_CC", "AVP_SESSION_ID", "AVP_CC_REQUEST_NUMBER",
    "AVP_SUBSCRIPTION_ID", "AVP_SUBSCRIPTION_ID_DATA", "AVP_RESULT_CODE", "AVP_EXPERIMENTAL_RESULT",
    "AVP_EXPERIMENTAL_RESULT_CODE", "AVP_MSCC",
]


async def run_load(options) -> dict:
    """Run the load described by options (LoadOptions or a dict of its fields) and
    return the merged result (see `merge`)."""
    if isinstance(options, dict):
        options = LoadOptions(**options)
    else:
        options = dataclasses.replace(options)
    options.validate()
    duration = options.duration
    if duration is None and options.requests is None:
        duration = 10.0
    parts = partition(options, duration)
    if len(parts) == 1:
        raws = [await _run_part(options, parts[0])]
    else:
        raws = await _run_processes(options, parts)
    return merge(raws, options)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    d = LoadOptions()
    p = argparse.ArgumentParser(prog="loadgen", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--host", default=d.host, help="node address")
    a("--port", type=int, default=d.port, help="node TCP port")
    a("--connections", "-c", type=int, default=d.connections,
      help="connections in all (spread over the processes), Origin-Host load{n}.localdomain")
    a("--sessions", "-s", type=int, default=d.sessions, help="concurrent sessions in all")
    a("--updates", "-u", type=int, default=d.updates, help="CCR-UPDATEs per session")
    a("--subscribers", type=int, default=d.subscribers, help="number of subscribers used")
    a("--subscriber-first", type=int, default=d.subscriber_first, help="first subscriber index")
    a("--subscriber-prefix", default=d.subscriber_prefix, help="Subscription-Id-Data prefix")
    a("--subscriber-digits", type=int, default=d.subscriber_digits,
      help="digits of the zero-padded subscriber index after the prefix")
    a("--subscriber-order", choices=["round-robin", "random"], default=d.subscriber_order)
    a("--octets", type=int, default=d.octets, help="CC-Total-Octets of the Used-Service-Unit on U and T")
    a("--rating-group", type=int, default=d.rating_group)
    a("--event-ratio", type=float, default=d.event_ratio, help="fraction of sessions that are one CCR-EVENT")
    a("--rate", "-r", type=float, default=None, help="target requests/s in all (default: as fast as possible)")
    a("--requests", "-n", type=int, default=None, help="stop after this many requests in all")
    a("--duration", "-d", type=float, default=None,
      help="stop after this many seconds (default 10 unless --requests is given)")
    a("--warmup", type=float, default=d.warmup, help="seconds left out of CCR/s and latency")
    a("--processes", "-p", type=int, default=d.processes, help="driver processes")
    a("--timeout", type=float, default=d.timeout,
      help="seconds for connect+CEA, for the last answers, and without any answer before giving up")
    a("--origin-realm", default=d.origin_realm)
    a("--destination-realm", default=d.destination_realm)
    a("--host-first", type=int, default=d.host_first, help="number of the first Origin-Host load{n}")
    a("--no-mscc-codes", action="store_true", help="do not count MSCC-level Result-Codes")
    a("--seed", type=int, default=None, help="seed for random subscribers and events")
    a("--dictionaries", default=None, help="folder of *.dict files")
    a("--json", action="store_true", help="print the result as JSON")
    a("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return p


def options_from_args(args) -> LoadOptions:
    return LoadOptions(
        host=args.host, port=args.port, connections=args.connections, sessions=args.sessions,
        updates=args.updates, subscribers=args.subscribers, subscriber_first=args.subscriber_first,
        subscriber_prefix=args.subscriber_prefix, subscriber_digits=args.subscriber_digits,
        subscriber_order=args.subscriber_order, octets=args.octets, rating_group=args.rating_group,
        event_ratio=args.event_ratio, rate=args.rate, requests=args.requests,
        duration=args.duration if args.duration is not None else (None if args.requests else 10.0),
        warmup=args.warmup, processes=args.processes, timeout=args.timeout,
        origin_realm=args.origin_realm, destination_realm=args.destination_realm,
        host_first=args.host_first, mscc_codes=not args.no_mscc_codes, seed=args.seed,
        progress=not args.quiet, dictionaries=args.dictionaries)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = options_from_args(args)
    try:
        options.validate()
    except ValueError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run_load(options))
    except (ConnectionError, OSError, RuntimeError, TimeoutError) as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_result(result))
    return 0 if result["unanswered"] == 0 and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
