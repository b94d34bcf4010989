"""`ocs` command line: serve, demo, accounts, check, master, em-gateway, brm-gateway, bill, rate,
load, dict, decode."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from .config import ConfigError, load_config, override
from .diameter.dictionary import UNBOUNDED, Dictionary
from .diameter.dictload import load_directory
from .diameter.errors import DictionaryError
from .store.base import StoreError


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _metrics_listen(text: str) -> str:
    if text in ("", "off"):
        return ""
    _listen(text)
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocs", description="Diameter Gy/Ro online charging node")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the Diameter node")
    s.add_argument("--config", help="TOML configuration file (flags override it)")
    s.add_argument("--listen", type=_listen, help="HOST:PORT to listen on (default 0.0.0.0:3868)")
    s.add_argument("--origin-host", help="Origin-Host of this node")
    s.add_argument("--origin-realm", help="Origin-Realm of this node")
    s.add_argument("--dictionaries", help="folder of *.dict files")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument("--log-format", choices=["text", "json"])
    s.add_argument("--store", help="LMDB folder of the balance cache (default var/ocs.lmdb)")
    s.add_argument("--durability", choices=["fsync", "os"], help="commit durability (default fsync)")
    s.add_argument("--workers", type=int, help="worker processes sharing the port and the store "
                                               "(default [node] workers: 0 = one per CPU core)")
    s.add_argument("--metrics", type=_metrics_listen,
                   help="HOST:PORT of the Prometheus /metrics endpoint, or off "
                        "(default 127.0.0.1:9464)")

    from . import admin, health
    admin.add_parser(sub)
    health.add_parser(sub)
    for module in _external_modules():
        module.add_parser(sub)

    m = sub.add_parser("demo", help="load the demo data, serve, and charge a demo session")
    m.add_argument("--config", help="TOML configuration file (flags override it)")
    m.add_argument("--listen", type=_listen, help="HOST:PORT to listen on (default 127.0.0.1:3868)")
    m.add_argument("--store", help="LMDB folder (default var/ocs.lmdb)")
    m.add_argument("--master", help="master database URL (default sqlite:var/master.db)")
    m.add_argument("--once", action="store_true", help="stop after the demo session")

    d = sub.add_parser("dict", help="check or dump the Diameter dictionaries")
    d.add_argument("action", choices=["check", "dump"])
    d.add_argument("--dir", help="folder of *.dict files (default: the shipped dictionaries/)")
    d.add_argument("--json", action="store_true", help="dump as JSON")

    c = sub.add_parser("decode", help="decode Diameter messages from hex or a pcap file")
    c.add_argument("input", help="hex string, a file of hex, a .pcap/.pcapng file, or - for stdin hex")
    c.add_argument("--port", type=int, default=3868, help="TCP port of Diameter in a pcap")
    c.add_argument("--dir", help="folder of *.dict files")
    return p


def _external_modules() -> list:
    """Commands that run beside the node on the same LMDB cache (BRM's external modules).
    Each module has add_parser(sub) adding one sub-command named in its COMMAND, and
    run(args, config) -> exit status."""
    from .gateways import billing, brm, em, master_cli
    from .load import cli as load
    from . import rate
    return [em, brm, billing, master_cli, rate, load]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # output piped into `head` and the like: not an error; silence the flush at exit
        sys.stdout = open(os.devnull, "w")
        return 0


def _run(args) -> int:
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "dict":
            return _dict(args)
        if args.command == "accounts":
            from . import admin
            config = load_config(args.config)
            config = override(config, "store", path=args.store)
            return admin.run(args, config)
        if args.command == "check":
            from . import health
            config = override(load_config(args.config), "store", path=args.store)
            return health.run(args, config)
        if args.command == "demo":
            from .demo import run as demo
            config = load_config(args.config)
            config = override(config, "store", path=args.store)
            config = override(config, "master", url=args.master)
            host, port = args.listen or ("127.0.0.1", 3868)
            config = override(config, "listen", address=host, port=port)
            return demo(config, once=args.once)
        for module in _external_modules():
            if args.command == module.COMMAND:
                config = load_config(args.config)
                config = override(config, "store", path=getattr(args, "store", None))
                config = override(config, "master", url=getattr(args, "master", None))
                return module.run(args, config)
        if args.command == "decode":
            from .decode import run
            return run(args.input, load_directory(args.dir), args.port)
    except (ConfigError, DictionaryError, StoreError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    return 1


def _serve(args) -> int:
    from .service import serve, setup_logging
    config = load_config(args.config)
    if args.listen:
        config = override(config, "listen", address=args.listen[0], port=args.listen[1])
    config = override(config, "node", origin_host=args.origin_host, origin_realm=args.origin_realm)
    config = override(config, "diameter", dictionaries=args.dictionaries)
    config = override(config, "log", level=args.log_level, format=args.log_format)
    config = override(config, "store", path=args.store, durability=args.durability)
    config = override(config, "node", workers=args.workers)
    config = override(config, "metrics", listen=args.metrics)
    setup_logging(config.log.level, config.log.format)
    workers = config.node.workers or os.cpu_count() or 1
    if workers > 1:
        from .workers import run_workers
        return run_workers(config, workers)
    try:
        asyncio.run(serve(config))       # refuses to start on a bad dictionary (DictionaryError)
    except OSError as e:
        print(f"ocs: {listen_error(config, e)}", file=sys.stderr)
        return 2
    return 0


def listen_error(config, e: OSError) -> str:
    if (e.strerror or "").startswith("cannot serve metrics"):
        return e.strerror
    return f"cannot listen on {config.listen.address}:{config.listen.port}: {e.strerror or e}"


def _dict(args) -> int:
    d = load_directory(args.dir)
    if args.action == "check":
        print(f"ok: {d.summary()}")
        return 0
    if args.json:
        json.dump(_dump_json(d), sys.stdout, indent=1)
        print()
    else:
        print(_dump_text(d))
    return 0


def _rule_text(r) -> str:
    brackets = {"fixed": "< {} >", "required": "{{ {} }}", "optional": "[ {} ]"}[r.kind]
    default = (1, 1) if r.kind != "optional" else (0, 1)
    q = "" if (r.min, r.max) == default else f"{r.min or ''}*{'' if r.max == UNBOUNDED else r.max} "
    return q + brackets.format(r.name)


def _any_text(g) -> str:
    lo, hi = g.any_min, (None if g.any_max >= 1 << 62 else g.any_max)
    if (lo, hi) == (0, 1):
        return "[ AVP ]"
    q = f"{lo or ''}*{'' if hi is None else hi}"
    return f"{q} {{ AVP }}" if lo else f"{q} [ AVP ]"


def _dump_text(d: Dictionary) -> str:
    lines = [f"# {d.summary()}", "", "# AVPs: name code vendor type flags"]
    for a in sorted(d.avps.values(), key=lambda a: (a.vendor, a.code)):
        flags = "".join(f for f, bit in (("V", 0x80), ("M", 0x40), ("P", 0x20)) if a.flags & bit) or "-"
        lines.append(f"{a.name:45} {a.code:6} {a.vendor:6} {a.type.value:17} {flags}")
        if a.enum:
            lines += [f"    {v:6} {label}" for v, label in sorted(a.enum.items())]
        if a.grammar:
            lines += [f"    {_rule_text(r)}" for r in a.grammar.rules]
            if a.grammar.allows_any:
                lines.append(f"    {_any_text(a.grammar)}")
    lines += ["", "# Commands"]
    for c in sorted(d.commands.values(), key=lambda c: (c.code, not c.request)):
        hdr = ", ".join([str(c.code)] + (["REQ"] if c.request else []) + (["PXY"] if c.proxiable else [])
                        + ([str(c.application_id)] if c.application_id is not None else []))
        lines.append(f"{c.name} ::= < Diameter Header: {hdr} >")
        lines += [f"    {_rule_text(r)}" for r in c.grammar.rules]
        if c.grammar.allows_any:
            lines.append(f"    {_any_text(c.grammar)}")
    return "\n".join(lines)


def _dump_json(d: Dictionary) -> dict:
    def grammar(g):
        return {"rules": [{"name": r.name, "kind": r.kind, "min": r.min,
                           "max": None if r.max == UNBOUNDED else r.max} for r in g.rules],
                "any": ({"min": g.any_min, "max": None if g.any_max >= 1 << 62 else g.any_max}
                        if g.allows_any else None)}
    return {
        "files": list(d.files),
        "avps": [{"name": a.name, "code": a.code, "vendor": a.vendor, "type": a.type.value,
                  "flags": a.flags, "source": a.source,
                  "enum": {str(k): v for k, v in a.enum.items()} if a.enum else None,
                  "grammar": grammar(a.grammar) if a.grammar else None}
                 for a in sorted(d.avps.values(), key=lambda a: (a.vendor, a.code))],
        "commands": [{"name": c.name, "code": c.code, "request": c.request, "proxiable": c.proxiable,
                      "application_id": c.application_id, "grammar": grammar(c.grammar)}
                     for c in sorted(d.commands.values(), key=lambda c: (c.code, not c.request))],
    }


if __name__ == "__main__":
    sys.exit(main())
