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

from .config import Config, split_listen
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
from .metrics.collect import serve_http
from .metrics.tally import Tally
from .net.heartbeat import Heartbeat, held_elsewhere
from .net.telemetry import MetricsPublisher, drop_ended
from .net.notices import NoticeSender
from .net.server import DiameterServer
from .store.lmdb import LmdbStore

log = logging.getLogger("ocs")
HEARTBEAT_INTERVAL = 1.0        # seconds; `ocs check` allows a few missed beats


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "pid": record.process, "msg": record.getMessage()}
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
        handler.setFormatter(logging.Formatter(
            "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def local_peer(config: Config, origin_state_id: int | None = None) -> LocalPeer:
    n = config.node
    return LocalPeer(
        origin_host=n.origin_host, origin_realm=n.origin_realm,
        host_ip_addresses=tuple(ipaddress.ip_address(a) for a in n.host_ip_addresses),
        vendor_id=n.vendor_id, product_name=n.product_name,
        # RFC 6733 §8.16: increases on every restart that loses state
        origin_state_id=(int(time.time()) & 0xFFFFFFFF if origin_state_id is None
                         else origin_state_id),
        served_realms=tuple(config.node.served_realms),
    )


def node_context(config: Config, dictionary: Dictionary | None = None, worker: tuple = (0, 1),
                 origin_state_id: int | None = None, metrics: Tally | None = None) -> NodeContext:
    d = config.diameter
    dictionary = dictionary or load_directory(d.dictionaries)
    return NodeContext(
        local=local_peer(config, origin_state_id), dictionary=dictionary, registry=HandlerRegistry(),
        worker=worker, metrics=metrics,
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
                clock=time.time, started=None, worker: tuple | None = None,
                origin_state_id: int | None = None) -> None:
    """Run the node until SIGTERM/SIGINT or `stop`. With `store` given, the caller
    owns it (and closes it); otherwise the node opens and closes its own. `clock`
    gives the wall-clock seconds charging uses; `started(server)` is called once
    the node listens (tests learn the port from it, and the /metrics port from
    `server.metrics_port`).

    `worker` = (index, count) runs this process as one of `ocs serve --workers`
    (ocs/workers.py): it shares the port (SO_REUSEPORT) and leaves /metrics to
    the supervisor. Without it the process is the whole node."""
    tally = Tally()
    node = node_context(config, worker=worker or (0, 1), origin_state_id=origin_state_id,
                        metrics=tally)
    log.info("dictionaries: %s", node.dictionary.summary())
    loop = asyncio.get_running_loop()
    own = store is None
    store = open_store(config) if own else store
    try:
        await _serve(config, node, store, ready, stop, clock, started, worker is not None)
    finally:
        if own:
            await loop.run_in_executor(None, store.close)


async def _serve(config: Config, node: NodeContext, store: LmdbStore, ready, stop, clock,
                 started, is_worker: bool) -> None:
    log.info("store: %s (durability %s)", config.store.path, config.store.durability)
    astore = AsyncStore(store, asyncio.get_running_loop(), node.metrics)
    books = ledger(config)
    handler = CreditControlHandler(
        astore, books, node.dictionary, node.local.origin_host, node.local.origin_realm, clock,
        config.charging.max_pending, node.metrics)
    # with several workers on one store, decide outside LMDB's write lock (they would
    # queue for it otherwise); alone, deciding inside it is cheaper
    handler.speculative = is_worker and node.worker[1] > 1
    node.registry.register(CREDIT_CONTROL_APPLICATION, CREDIT_CONTROL_COMMAND, handler)
    log.info("handlers: %s", node.registry.keys())
    sweeper = Sweeper(astore, books, config.charging.sweep_interval, clock)
    # RAR/ASR for the notices the EM gateway queues (account topped up, suspended, closed)
    notices = NoticeSender(astore, node, config.charging.notice_interval, clock)
    heartbeat = Heartbeat(astore, HEARTBEAT_INTERVAL,
                          f"{config.listen.address}:{config.listen.port}", node.local.origin_host,
                          peers=node.peers.states)
    if is_worker and node.worker[1] > 1:
        # one connection per peer across the workers too (their heartbeats list theirs)
        node.peers.elsewhere = held_elsewhere(store, 3 * HEARTBEAT_INTERVAL)
    publisher = MetricsPublisher(astore, node.metrics, config.metrics.interval, node, handler)
    server = DiameterServer(node)
    await server.start(config.listen.address, config.listen.port, reuse_port=is_worker)
    http = None
    if not is_worker:
        # the whole node in this process: earlier processes' metrics end here, and
        # this process serves /metrics
        await astore.run(lambda txn: drop_ended(txn, time.time()))
        http = start_metrics_http(config, store)
    server.metrics_port = http[0].server_port if http else None
    if started is not None:
        started(server)
    sweeper.start()
    notices.start()
    heartbeat.start()
    publisher.start()
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
    await publisher.stop()
    if http is not None:
        http[0].shutdown()
        http[0].server_close()
    log.info("stopped")


def start_metrics_http(config: Config, store):
    """The /metrics endpoint of [metrics] listen, or None when it is ""."""
    if not config.metrics.listen:
        return None
    host, port = split_listen(config.metrics.listen)
    try:
        http = serve_http(store, host, port)
    except OSError as e:
        raise OSError(e.errno, f"cannot serve metrics on {config.metrics.listen}: {e.strerror}") from e
    log.info("metrics on http://%s:%d/metrics", host, http[0].server_port)
    return http
