"""`ocs demo`: the node on its embedded defaults, demo data, one charged session.

The whole chain on LMDB + SQLite: loads `ocs/demo_data.toml` into the master
database (once), lets the EM gateway load the cache from it, starts the node,
and acts as a P-GW and an SMSC over real Diameter on loopback: a data session
for alice (CCR-I, CCR-U, CCR-T), an SMS direct debit, and bob running out of
money (final units, then 4012). The BRM gateway delivers the rated events to
the master, and the demo prints them. Then it keeps serving with both
gateways following (Ctrl-C stops) unless `--once`. A gateway whose thread
dies says so (the exception in the log, a one-line warning on stderr); the
node goes on serving without it. Every master connection is closed on exit.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import sys
import threading
import time
import tomllib

from .config import Config
from .diameter.capabilities import LocalPeer
from .net.client import connect
from .net.connection import NodeContext

MB = 1 << 20
log = logging.getLogger("ocs.demo")


def demo_data() -> dict:
    return tomllib.loads(importlib.resources.files("ocs").joinpath("demo_data.toml").read_text())


def load_demo(store) -> dict:
    """The demo data straight into a cache (tests; the demo itself goes through the master)."""
    from .charging import provision as prov
    data = demo_data()
    return store.write(lambda txn: prov.load_data(txn, data, int(time.time())))


def _ccr(client, session: str, rtype: int, number: int, subscriber, context: str, mscc=None, extra=()):
    avps = [("Session-Id", session), ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
            ("Service-Context-Id", context), ("CC-Request-Type", rtype), ("CC-Request-Number", number)]
    if subscriber:
        avps.append(("Subscription-Id", {"Subscription-Id-Type": subscriber[0],
                                         "Subscription-Id-Data": subscriber[1]}))
    avps += list(extra)
    if mscc is not None:
        avps += [("Multiple-Services-Indicator", 1), ("Multiple-Services-Credit-Control", mscc)]
    return client.build("Credit-Control-Request", avps)


def _describe(ans) -> str:
    parts = [f"Result-Code {ans.get('Result-Code')}"]
    for m in ans.find_all("Multiple-Services-Credit-Control"):
        gsu = m.find("Granted-Service-Unit")
        bits = [f"RG {m.get('Rating-Group')}", f"MSCC Result-Code {m.get('Result-Code')}"]
        if gsu is not None:
            bits.append("granted " + ", ".join(f"{a.name} {a.value}" for a in gsu.value))
        if m.get("Validity-Time") is not None:
            bits.append(f"Validity-Time {m.get('Validity-Time')} s")
        fui = m.find("Final-Unit-Indication")
        if fui is not None:
            server = fui.find("Redirect-Server")
            bits.append(f"final units: {fui.find('Final-Unit-Action').label}"
                        + (f" to {server.get('Redirect-Server-Address')}" if server else ""))
        parts.append("; ".join(bits))
    gsu = ans.find("Granted-Service-Unit")
    if gsu is not None:
        parts.append("granted " + ", ".join(f"{a.name} {a.value}" for a in gsu.value))
    return " | ".join(parts)


async def drive(host: str, port: int, dictionary, out=sys.stdout) -> list:
    """The demo traffic; returns the session ids it used."""
    node = NodeContext(LocalPeer("demo-pgw.localdomain", "localdomain"), dictionary)
    client = await connect(host, port, node)
    stamp = time.time_ns() // 1000        # Session-Ids unique across runs (RFC 6733 §8.8)
    alice, bob = (0, "46700000001"), (0, "46700000002")
    data = "32251@3gpp.org"
    s1, s2, s3 = (f"demo-pgw.localdomain;{stamp};{n}" for n in (1, 2, 3))
    steps = [
        ("alice CCR-I  ", s1, 1, 0, alice, data, {"Rating-Group": 10, "Requested-Service-Unit": []}),
        ("alice CCR-U  ", s1, 2, 1, alice, data, {"Rating-Group": 10, "Requested-Service-Unit": [],
                                                  "Used-Service-Unit": {"CC-Total-Octets": 5 * MB}}),
        ("alice CCR-T  ", s1, 3, 2, alice, data, {"Rating-Group": 10,
                                                  "Used-Service-Unit": {"CC-Total-Octets": 3 * MB}}),
        ("alice SMS    ", s2, 4, 0, alice, "32274@3gpp.org", None),
        ("bob   CCR-I  ", s3, 1, 0, bob, data, {"Rating-Group": 10, "Requested-Service-Unit": []}),
        ("bob   CCR-U  ", s3, 2, 1, bob, data, {"Rating-Group": 10, "Requested-Service-Unit": [],
                                                "Used-Service-Unit": {"CC-Total-Octets": 25 * MB}}),
        ("bob   CCR-T  ", s3, 3, 2, bob, data, {"Rating-Group": 10,
                                                "Used-Service-Unit": {"CC-Total-Octets": 0}}),
    ]
    try:
        for label, sid, rtype, number, sub, ctx, mscc in steps:
            extra = [("Requested-Action", 0), ("Requested-Service-Unit",
                                                {"CC-Service-Specific-Units": 1})] if rtype == 4 else []
            ans = await client.request(_ccr(client, sid, rtype, number, sub, ctx, mscc, extra))
            print(f"{label} {_describe(ans)}", file=out)
    finally:
        await client.close()
    return [s1, s2, s3]


def print_events(master, sessions: list, out=sys.stdout) -> None:
    with master.transaction(snapshot=True) as cur:
        rows = cur.all("SELECT body FROM rated_events ORDER BY loaded_at, event_id")
    events = sorted((json.loads(r[0]) for r in rows), key=lambda e: e["event_id"])
    print(f"rated events delivered to the master database ({master.url}):", file=out)
    for e in events:
        if e.get("session") in sessions:
            print("  " + json.dumps({k: e[k] for k in ("event_id", "type", "account", "rating_group",
                                                       "units", "amount", "unpaid", "currency",
                                                       "impacts", "balance_after")}), file=out)


def prepare(config: Config, store, out=sys.stdout):
    """Master DB with the demo data (once), and the cache loaded from it by the EM gateway."""
    from .gateways.em import Gateway
    from .gateways.master import connect
    from .gateways.master_cli import load
    master = connect(config.master.url)
    master.migrate()
    with master.transaction(snapshot=True) as cur:
        empty = cur.one("SELECT count(*) FROM accounts")[0] == 0
    if empty:
        counts = load(master, demo_data())
        print(f"master database {config.master.url}: {counts['plans']} plans, "
              f"{counts['customers']} customers, {counts['accounts']} accounts (demo data)", file=out)
    em = Gateway(store, master, config.em.batch, config.em.poll_interval)
    em.start(progress=None)
    em.catch_up()
    with store.read() as txn:
        n = txn.count("accounts")
    print(f"cache {config.store.path}: {n} accounts loaded by the EM gateway", file=out)
    return master, em


class GatewayThread:
    """A gateway's loop (`em.follow`, `deliverer.serve`) in a daemon thread that does not
    die silently: an exception, or a return before `gateway.stop` is set, is logged with
    its traceback and reported on stderr in one line; the node keeps serving."""

    def __init__(self, name: str, gateway, target):
        self.name, self.gateway, self.target = name, gateway, target
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.target()
        except BaseException as e:          # noqa: BLE001 - whatever it was, it is reported
            self.failure = e
            if self.gateway.stop.is_set():  # shutting down (its connection closed under it)
                log.debug("%s ended while stopping: %r", self.name, e)
                return
            log.error("%s stopped: %s: %s", self.name, type(e).__name__, e, exc_info=e)
            why = f"{type(e).__name__}: {e}"
        else:
            if self.gateway.stop.is_set():
                return
            log.error("%s stopped without being asked to", self.name)
            why = "it returned"
        print(f"ocs demo: warning: the {self.name} stopped ({why}); the node goes on serving "
              f"without it", file=sys.stderr, flush=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.gateway.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)


def close_masters(*holders) -> None:
    """Close the master connection of each of `holders` (a Master, or a gateway's
    current `master`, which a reconnect may have replaced; the EM gateway's LISTEN
    connection too), each once; a failure to close is logged, never raised."""
    done: set[int] = set()
    for h in holders:
        if h is None:
            continue
        unlisten = getattr(h, "_unlisten", None)
        if unlisten is not None:
            try:
                unlisten()
            except Exception as e:          # noqa: BLE001 - best effort on the way out
                log.warning("closing the EM gateway's LISTEN connection: %s", e)
        conn = getattr(h, "master", h)
        if conn is None or id(conn) in done:
            continue
        done.add(id(conn))
        try:
            conn.close()
        except Exception as e:              # noqa: BLE001
            log.warning("closing the master connection %s: %s", getattr(conn, "url", conn), e)


def run(config: Config, once: bool = False) -> int:
    """The node with the EM gateway and the BRM gateway beside it, in one process."""
    from .gateways import brm
    from .gateways.em_apply import SyncError
    from .gateways.master import MasterError, connect
    from .service import open_store, setup_logging
    setup_logging("warning", config.log.format)
    store = open_store(config)
    try:
        master, em = prepare(config, store)
    except (MasterError, SyncError) as e:
        store.close()
        print(f"ocs: {e}\n(a cache from an earlier `ocs demo` of another version: remove "
              f"{config.store.path} and run again)", file=sys.stderr)
        return 2
    deliverer = None
    threads: list[GatewayThread] = []
    try:
        em.master = connect(config.master.url)     # its own connection for its own thread
        deliverer = brm.Gateway(store, connect(config.master.url), config.brm.batch,
                                config.brm.poll_interval)
        from .metrics.publish import SnapshotWriter
        em.metrics = SnapshotWriter(store, "em-gateway", config.metrics.interval)
        deliverer.metrics = SnapshotWriter(store, "brm-gateway", config.metrics.interval)
        threads = [GatewayThread("EM gateway", em, em.follow),
                   GatewayThread("BRM gateway", deliverer, deliverer.serve)]
        asyncio.run(_main(config, once, store, master, threads))
    except KeyboardInterrupt:
        pass
    finally:
        em.stop.set()
        if deliverer is not None:
            deliverer.stop.set()
        for t in threads:
            t.stop()
        close_masters(em, deliverer, master)
        store.close()
    return 0


async def _main(config: Config, once: bool, store, master, threads: list) -> None:
    from .gateways import brm
    from .service import node_context, serve
    ready, stop = asyncio.Event(), asyncio.Event()
    config = free_metrics_port(config)
    metrics = []
    task = asyncio.create_task(serve(config, ready, stop, store,
                                     started=lambda server: metrics.append(server.metrics_port)))
    await asyncio.wait([asyncio.create_task(ready.wait()), task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    print(f"node listening on {config.listen.address}:{config.listen.port}")
    sessions = await drive(config.listen.address, config.listen.port, node_context(config).dictionary)
    await asyncio.to_thread(brm.drain, store, master, config.brm.batch)
    print_events(master, sessions)
    if once:
        stop.set()
    else:
        for t in threads:
            t.start()
        print("serving, with the EM and BRM gateways following; Ctrl-C stops. Try, in another "
              "terminal:\n  .venv/bin/ocs master top-up bob 500      # reaches the cache (and "
              "bob's open sessions, as RAR) within a second\n  .venv/bin/ocs accounts show bob"
              + (f"\n  curl -s http://127.0.0.1:{metrics[0]}/metrics | grep ^ocs_      "
                 "# Prometheus metrics" if metrics and metrics[0] else ""))
    await task


def free_metrics_port(config: Config) -> Config:
    """The demo's /metrics on [metrics] listen, or on a free port when that one is taken
    (a demo should not fail for want of its metrics port)."""
    import socket
    from .config import override, split_listen
    if not config.metrics.listen:
        return config
    host, port = split_listen(config.metrics.listen)
    try:
        with socket.socket() as s:
            s.bind((host, port))
    except OSError:
        print(f"ocs demo: {config.metrics.listen} is taken; serving /metrics on a free port",
              file=sys.stderr)
        return override(config, "metrics", listen=f"{host}:0")
    return config
