"""Composition root of `ocs serve`: dictionaries, identity, handlers, listener, signals.

Start-up refuses to continue on a broken dictionary or config. SIGTERM/SIGINT
stop accepting, send DPR on every open connection, wait for the DPAs (bounded
by the DPA timeout) and exit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import signal
import sys
import time

from .config import Config
from .diameter.capabilities import LocalPeer
from .diameter.dictionary import Dictionary
from .diameter.dictload import load_directory
from .diameter.duplicates import DuplicateCache
from .net.application import HandlerRegistry
from .net.connection import NodeContext
from .net.server import DiameterServer

log = logging.getLogger("ocs")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        for key in ("peer", "session_id", "connection"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def local_peer(config: Config) -> LocalPeer:
    n = config.node
    return LocalPeer(
        origin_host=n.origin_host, origin_realm=n.origin_realm,
        host_ip_addresses=tuple(ipaddress.ip_address(a) for a in n.host_ip_addresses),
        vendor_id=n.vendor_id, product_name=n.product_name,
        # RFC 6733 §8.16: increases on every restart that loses state
        origin_state_id=int(time.time()) & 0xFFFFFFFF,
        served_realms=tuple(config.node.served_realms),
    )


def node_context(config: Config, dictionary: Dictionary | None = None) -> NodeContext:
    d = config.diameter
    dictionary = dictionary or load_directory(d.dictionaries)
    return NodeContext(
        local=local_peer(config), dictionary=dictionary, registry=HandlerRegistry(),
        duplicates=DuplicateCache(d.duplicate_lifetime),
        allowed_peers=None if d.allowed_peers is None else frozenset(d.allowed_peers),
        tw=d.tw, cer_timeout=d.cer_timeout, dpa_timeout=d.dpa_timeout,
        max_message_length=d.max_message_length)


async def serve(config: Config, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    node = node_context(config)
    log.info("dictionaries: %s", node.dictionary.summary())
    handlers = node.registry.keys()
    log.info("handlers: %s", handlers or "none (every application request is answered 3001)")
    server = DiameterServer(node)
    await server.start(config.listen.address, config.listen.port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            # no signal handlers here (not the main thread, or no Unix signals): the
            # caller stops the node through the `stop` event instead
            continue
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping: sending DPR to %d peer(s)", len(server.connections))
    await server.stop()
    log.info("stopped")
