"""Command line of the load generator: `ocs load ...` (an external module of
ocs/cli.py: `COMMAND`, `add_parser(sub)`, `run(args, config)`), `python3 -m
ocs.load ...` and `python3 tools/loadgen.py ...` (`main(argv)`), with the same
flags. Exit status: 0 every request answered, 1 some unanswered or lost (or the
node unreachable), 2 bad options, among them a `--host` that is not a loopback
address, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .common import LoadOptions, is_loopback

COMMAND = "load"
HELP = "drive a node with Gy credit-control load (loopback only)"


def add_arguments(p: argparse.ArgumentParser, standalone: bool = True) -> None:
    """The load generator's flags on p; not standalone (`ocs load`): --host and --port
    default to None, for `run` to take them from the config."""
    d = LoadOptions()
    a = p.add_argument
    a("--host", default=d.host if standalone else None,
      help="node address: loopback only (127.0.0.0/8, ::1 or localhost)"
           + ("" if standalone else " (default: [listen] address if a loopback one, else 127.0.0.1)"))
    a("--port", type=int, default=d.port if standalone else None,
      help="node TCP port" + ("" if standalone else " (default: [listen] port)"))
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


def _parser() -> argparse.ArgumentParser:
    from . import __doc__ as doc
    p = argparse.ArgumentParser(prog="loadgen", description=(doc or HELP).split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    return p


def add_parser(sub) -> None:
    """The `ocs load` sub-command."""
    p = sub.add_parser(COMMAND, help=HELP, description=HELP,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="TOML configuration file (its [listen] port and [diameter] "
                                    "dictionaries are the defaults of --port and --dictionaries)")
    add_arguments(p, standalone=False)


def options_from_args(args) -> LoadOptions:
    host = (args.host if args.host is not None else LoadOptions().host).strip()
    if host.startswith("[") and host.endswith("]"):          # [::1]
        host = host[1:-1]
    return LoadOptions(
        host=host, port=args.port if args.port is not None else LoadOptions().port,
        connections=args.connections, sessions=args.sessions,
        updates=args.updates, subscribers=args.subscribers, subscriber_first=args.subscriber_first,
        subscriber_prefix=args.subscriber_prefix, subscriber_digits=args.subscriber_digits,
        subscriber_order=args.subscriber_order, octets=args.octets, rating_group=args.rating_group,
        event_ratio=args.event_ratio, rate=args.rate, requests=args.requests,
        duration=args.duration if args.duration is not None else (None if args.requests else 10.0),
        warmup=args.warmup, processes=args.processes, timeout=args.timeout,
        origin_realm=args.origin_realm, destination_realm=args.destination_realm,
        host_first=args.host_first, mscc_codes=not args.no_mscc_codes, seed=args.seed,
        progress=not args.quiet, dictionaries=args.dictionaries)


def _execute(options: LoadOptions, as_json: bool) -> int:
    from .procs import run_load              # here: `ocs` imports this module for its parser
    from .report import format_result
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
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print(format_result(result))
    return 0 if result["unanswered"] == 0 and result["lost"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """`python3 -m ocs.load` / tools/loadgen.py."""
    args = _parser().parse_args(argv)
    return _execute(options_from_args(args), args.json)


def run(args, config) -> int:
    """`ocs load`: config (an ocs Config, or None) gives the defaults of --port (its
    [listen] port) and --dictionaries; the host stays the loopback one asked for."""
    if config is not None:
        if args.port is None:
            args.port = config.listen.port
        if args.dictionaries is None:
            args.dictionaries = config.diameter.dictionaries
        if args.host is None and is_loopback(config.listen.address):
            args.host = config.listen.address       # a node listening on 127.0.0.2, say
    return _execute(options_from_args(args), args.json)
