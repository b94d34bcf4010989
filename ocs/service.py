"""Composition root of `ocs serve`: dictionaries, identity, handlers, listener, signals,
the Tcc sweeper and the RAR/ASR notice poller.

Start-up refuses to continue on a broken dictionary or config. SIGTERM/SIGINT
stop accepting, send DPR on every open connection, wait for the DPAs (bounded
by the DPA timeout) and exit.
"""

from __future__ import annotations

import asyncio
import gc
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
from .charging.ledger import Ledger
from .charging.quota import EngineConfig
from .net.application import HandlerRegistry
from .net.connection import NodeContext
from .net.credit_control import (CREDIT_CONTROL_APPLICATION, CREDIT_CONTROL_COMMAND, AsyncStore,
                                 CreditControlHandler, Sweeper)
from .net.heartbeat import Heartbeat
from .net.notices import NoticeSender
from .net.server import DiameterServer
from .store.lmdb import LmdbStore

log = logging.getLogger("ocs")
HEARTBEAT_INTERVAL = 1.0        # seconds; `ocs check` allows a few missed beats


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


def open_store(config: Config, readonly: bool = False) -> LmdbStore:
    s = config.store
    return LmdbStore(s.path, map_size=s.map_size, durability=s.durability, max_batch=s.max_batch,
                     sync_interval=s.sync_interval, readonly=readonly)


def ledger(config: Config) -> Ledger:
    c = config.charging
    return Ledger(EngineConfig(c.validity_time, c.tcc_factor), c.answer_retention)


async def serve(config: Config, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, store: LmdbStore | None = None,
                clock=time.time, started=None) -> None:
    """Run the node until SIGTERM/SIGINT or `stop`. With `store` given, the caller
    owns it (and closes it); otherwise the node opens and closes its own. `clock`
    gives the wall-clock seconds charging uses; `started(server)` is called once
    the node listens (tests learn the port from it)."""
    node = node_context(config)
    log.info("dictionaries: %s", node.dictionary.summary())
    loop = asyncio.get_running_loop()
    own = store is None
    store = open_store(config) if own else store
    try:
        await _serve(config, node, store, ready, stop, clock, started)
    finally:
        if own:
            await loop.run_in_executor(None, store.close)


async def _serve(config: Config, node: NodeContext, store: LmdbStore, ready, stop, clock,
                 started) -> None:
    log.info("store: %s (durability %s)", config.store.path, config.store.durability)
    astore = AsyncStore(store, asyncio.get_running_loop())
    books = ledger(config)
    node.registry.register(CREDIT_CONTROL_APPLICATION, CREDIT_CONTROL_COMMAND, CreditControlHandler(
        astore, books, node.dictionary, node.local.origin_host, node.local.origin_realm, clock,
        config.charging.max_pending))
    log.info("handlers: %s", node.registry.keys())
    sweeper = Sweeper(astore, books, config.charging.sweep_interval, clock)
    # RAR/ASR for the notices the EM gateway queues (account topped up, suspended, closed)
    notices = NoticeSender(astore, node, config.charging.notice_interval, clock)
    heartbeat = Heartbeat(astore, HEARTBEAT_INTERVAL,
                          f"{config.listen.address}:{config.listen.port}", node.local.origin_host)
    server = DiameterServer(node)
    await server.start(config.listen.address, config.listen.port)
    if started is not None:
        started(server)
    sweeper.start()
    notices.start()
    heartbeat.start()
    # Each CCR allocates a few hundred short-lived objects: with the default
    # 700-allocation young generation the cyclic GC runs every couple of requests.
    # Start-up objects (dictionaries) are moved out of its way, and it runs less often.
    gc.freeze()
    gc.set_threshold(20000, 20, 100)
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
    await sweeper.stop()
    await notices.stop()
    await heartbeat.stop()
    await server.stop()
    log.info("stopped")
