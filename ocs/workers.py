"""`ocs serve --workers N`: N worker processes, one event loop each, one port, one cache.

The supervisor (this process) reserves the Diameter port, starts the workers
and serves `/metrics`; each worker is a whole node (ocs.service.serve) except
for the metrics endpoint:

- **One port.** The supervisor binds the port with SO_REUSEPORT and never
  listens on it (so port 0 gets one number for all); every worker binds the
  same port with SO_REUSEPORT and listens, and the kernel spreads incoming
  connections over the workers. A peer's connection stays on one worker; a
  session's requests may arrive on any (a client with several connections, or
  a relay, spreads them): the session lives in the shared LMDB cache, and
  every request's effect is written in a write transaction, which LMDB's write
  lock serialises across processes. Each worker decides its CCRs on a snapshot
  outside that lock and the batch applies a decision only if what it read is
  unchanged (docs/architecture.md, ocs/store/speculate.py).
- **One identity.** All workers advertise the same Origin-Host and the same
  Origin-State-Id (the supervisor's start), and split the End-to-End id space
  (RFC 6733 §3: unique per node): a worker's index is in the top bits of the
  counter (ocs.diameter.duplicates.EndToEndIds).
- **Start-up.** The supervisor waits until every worker listens. If one fails
  (a bad dictionary, the port taken, a store it cannot open), all are stopped
  and `ocs serve` exits 2 with the worker's error.
- **A worker that dies** is logged and started again (1 s back-off, doubled
  up to 30 s while it keeps dying within a minute); the others keep serving.
  Its peers reconnect (to any worker); its counters stay in the totals.
- **Stop.** SIGTERM or SIGINT to the supervisor sends SIGTERM to every worker;
  each sends DPR to its peers and waits for the DPAs (ocs.service), and the
  supervisor waits for them (SIGKILL after `dpa_timeout` + 5 s). A worker
  whose supervisor is gone (SIGKILL) stops by itself within a second.

One connection per peer (ocs/net/peers.py) holds across the workers through
their heartbeats, which are up to a second old: two connections of one
Origin-Host opened within that second on two workers are both accepted.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time

from .config import Config, override

log = logging.getLogger("ocs")
READY_TIMEOUT = 60.0


def reserve_port(address: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound to (address, port) with SO_REUSEPORT, not listening: it holds
    the port (port 0: picks it) for the workers without taking connections."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock, sock.getsockname()[1]


def worker_main(config: Config, index: int, count: int, state_id: int, conn, parent: int) -> None:
    """Entry point of a worker process (spawned: nothing of the supervisor's state)."""
    from .config import ConfigError
    from .diameter.errors import DictionaryError
    from .service import serve, setup_logging
    from .store.base import StoreError
    setup_logging(config.log.level, config.log.format)

    async def main() -> None:
        stop = asyncio.Event()

        async def orphaned() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(1.0)
            log.error("worker %d: the supervisor (pid %d) is gone; stopping", index, parent)
            stop.set()
        watch = asyncio.get_running_loop().create_task(orphaned())
        try:
            await serve(config, stop=stop, worker=(index, count), origin_state_id=state_id,
                        started=lambda server: conn.send(("ready", server.port)))
        finally:
            watch.cancel()
    try:
        asyncio.run(main())
    except (ConfigError, DictionaryError, StoreError, OSError) as e:
        conn.send(("error", f"worker {index}: {e}"))
        print(f"ocs: worker {index}: {e}", file=sys.stderr)
        sys.exit(2)


class Supervisor:
    def __init__(self, config: Config, count: int, state_id: int):
        self.config, self.count, self.state_id = config, count, state_id
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, multiprocessing.Process] = {}
        self.conns: dict[int, object] = {}
        self.started: dict[int, float] = {}     # index -> monotonic start
        self.backoff: dict[int, float] = {}     # index -> seconds waited before its last restart
        self.due: dict[int, float] = {}         # index -> when to start it again
        self.stopping = False

    def spawn(self, index: int) -> None:
        ours, theirs = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=worker_main, name=f"ocs-worker-{index}", args=(
            self.config, index, self.count, self.state_id, theirs, os.getpid()))
        p.start()
        theirs.close()
        old = self.conns.get(index)
        if old is not None:
            old.close()
        self.procs[index], self.conns[index] = p, ours
        self.started[index] = time.monotonic()

    def wait_ready(self) -> str | None:
        """None when every worker listens, else the first error."""
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = set(self.procs)
        while waiting and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"workers {sorted(waiting)} did not start within {READY_TIMEOUT:g} s"
            for index in list(waiting):
                conn, proc = self.conns[index], self.procs[index]
                if conn.poll(0.05):
                    try:
                        kind, value = conn.recv()
                    except EOFError:
                        return f"worker {index} exited with status {proc.exitcode} while starting"
                    if kind == "error":
                        return value
                    waiting.discard(index)
                elif not proc.is_alive():
                    return f"worker {index} exited with status {proc.exitcode} while starting"
        return None

    def watch(self) -> None:
        """Until SIGTERM/SIGINT: start again the workers that die."""
        while not self.stopping:
            alive = [p.sentinel for p in self.procs.values() if p.is_alive()]
            multiprocessing.connection.wait(alive, timeout=0.5)
            now = time.monotonic()
            for index, proc in self.procs.items():
                if self.stopping or proc.is_alive() or index in self.due:
                    continue
                quick = now - self.started[index] < 60
                previous = self.backoff.get(index, 0.0)
                self.backoff[index] = min(30.0, previous * 2) if quick and previous else 1.0
                log.error("worker %d (pid %d) exited with status %s; starting it again in %.0f s",
                          index, proc.pid, proc.exitcode, self.backoff[index])
                self.due[index] = now + self.backoff[index]
            for index, due in list(self.due.items()):
                if not self.stopping and now >= due:
                    del self.due[index]
                    self.spawn(index)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()                   # SIGTERM: DPR to its peers, then exit
        deadline = time.monotonic() + self.config.diameter.dpa_timeout + 5
        for p in self.procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.join(5)


def run_workers(config: Config, count: int) -> int:
    from .net.telemetry import drop_ended
    from .service import open_store, start_metrics_http
    try:
        holder, port = reserve_port(config.listen.address, config.listen.port)
    except OSError as e:
        print(f"ocs: cannot listen on {config.listen.address}:{config.listen.port}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 2
    config = override(config, "listen", port=port)
    store = open_store(config)
    http = None
    sup = Supervisor(config, count, int(time.time()) & 0xFFFFFFFF)
    try:
        store.write(lambda txn: drop_ended(txn, time.time()))
        try:
            http = start_metrics_http(config, store)
        except OSError as e:
            print(f"ocs: {e.strerror or e}", file=sys.stderr)
            return 2
        def on_signal(signum, _frame) -> None:
            sup.stopping = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        for index in range(count):
            sup.spawn(index)
        error = sup.wait_ready()
        if error is not None:
            print(f"ocs: {error}", file=sys.stderr)
            return 2
        log.info("%d workers serving on %s:%d (pids %s)", count, config.listen.address, port,
                 ", ".join(str(p.pid) for p in sup.procs.values()))

        sup.watch()
        log.info("stopping %d workers", count)
        return 0
    finally:
        sup.stop()
        if http is not None:
            http[0].shutdown()
            http[0].server_close()
        store.close()
        holder.close()
