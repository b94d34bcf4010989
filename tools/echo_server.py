#!/usr/bin/env python3
"""Framing-only Diameter echo server: the baseline of tools/bench (the ceiling of
Python asyncio networking on this machine, with the node's work left out).

    python3 tools/echo_server.py --listen 127.0.0.1:3868                  # one process
    python3 tools/echo_server.py --listen 127.0.0.1:0 --processes 2       # 2 processes, SO_REUSEPORT
    python3 tools/echo_server.py --listen 127.0.0.1:3868 --answer minimal

One asyncio.Protocol per connection, like the node's: it splits the byte
stream into Diameter frames by the 4-byte header (version 1, 24-bit length),
and for each request appends an answer to one output buffer, written once per
data_received; answers it receives are dropped. Nothing is decoded:

- CER: a CEA encoded once at start-up (Result-Code 2001, Origin-Host
  echo.localdomain, Auth-Application-Id 4) with the Hop-by-Hop and End-to-End
  ids of the CER patched in;
- any other request (CCR, DWR, DPR...): `--answer echo` (default) the request
  itself with the R bit cleared and a Result-Code 2001 AVP appended (an answer
  of about a CCA's size, which the load generator scans AVP by AVP like a real
  CCA: its Session-Id ... MSCC and the Result-Code); `--answer minimal` only the
  header with R cleared and the Result-Code AVP (32 octets).

The load generator (ocs.load) counts either as a 2001 answer: it matches an
answer to its request by the Hop-by-Hop id, and reads the command-level
Result-Code as the first non-vendor AVP 268 at the top level.

Processes: `--processes N` (default 1) serve one port: the parent binds it with
SO_REUSEPORT without listening (port 0 picks a number for all), each child
binds it with SO_REUSEPORT and listens, and the kernel spreads the connections
over them (by a hash of the addresses and ports: 8 connections over 2
processes are not always 4 + 4). With N = 1 the parent serves itself. When
every process listens, one line goes to stdout:

    echo_server listening on 127.0.0.1:PORT processes N pids P1,P2

SIGTERM or SIGINT stops it; each process then prints its connections and
answers on stderr.

API: `serve(host, port, processes, answer)` (blocks), `EchoProtocol`,
`build_cea()`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import struct
import sys

_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

_HDR = struct.Struct(">IIIII")
_IDS = struct.Struct(">II")
_U32 = struct.Struct(">I")
CMD_CER = 257
FLAG_R = 0x80000000
# Result-Code (268), flags M, length 12, 2001
RESULT_2001 = struct.pack(">III", 268, 0x40000000 | 12, 2001)


def build_cea(origin_host: str = "echo.localdomain", origin_realm: str = "localdomain") -> bytes:
    """A CEA with Result-Code 2001 (ids 0, to be patched), encoded by the ocs codec."""
    from ocs.diameter.capabilities import LocalPeer, build_cea as cea_of, build_cer
    from ocs.diameter.dictload import load_directory
    d = load_directory()
    local = LocalPeer(origin_host, origin_realm, product_name="ocs-echo")
    cer = build_cer(LocalPeer("peer.localdomain", origin_realm), d)
    cer.hop_by_hop = cer.end_to_end = 0
    return cea_of(local, cer, 2001).encode()


class EchoProtocol(asyncio.Protocol):
    """Frames requests and answers each at once (see the module's docstring)."""

    __slots__ = ("transport", "buf", "server")

    def __init__(self, server: "EchoServer"):
        self.server = server
        self.transport = None
        self.buf = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections += 1
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        n = len(data)
        pos = 0
        out = bytearray()
        minimal = self.server.minimal
        answers = 0
        while n - pos >= 20:
            w0, w1 = _IDS.unpack_from(data, pos)
            length = w0 & 0xFFFFFF
            if w0 >> 24 != 1 or length < 20:
                self.transport.abort()
                return
            end = pos + length
            if end > n:
                break
            if w1 & FLAG_R:
                answers += 1
                base = len(out)
                if w1 & 0xFFFFFF == CMD_CER:
                    out += self.server.cea
                    out[base + 12:base + 20] = data[pos + 12:pos + 20]
                elif minimal:
                    out += data[pos:pos + 20]
                    _IDS.pack_into(out, base, 0x01000020, w1 & 0x7FFFFFFF)
                    out += RESULT_2001
                else:
                    out += data[pos:end]
                    _IDS.pack_into(out, base, 0x01000000 | (length + 12), w1 & 0x7FFFFFFF)
                    out += RESULT_2001
            pos = end
        self.buf = data[pos:] if pos < n else b""
        if out:
            self.server.answers += answers
            self.transport.write(out)


class EchoServer:
    def __init__(self, answer: str = "echo"):
        self.minimal = answer == "minimal"
        self.cea = build_cea()
        self.connections = 0
        self.answers = 0

    async def run(self, sock: socket.socket, ready=None) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(lambda: EchoProtocol(self), sock=sock, backlog=1024)
        if ready is not None:
            ready()
        await stop.wait()
        server.close()


def _socket(host: str, port: int, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(1024)
        sock.setblocking(False)
    return sock


def _child(host: str, port: int, index: int, answer: str, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)         # the parent stops us with SIGTERM
    server = EchoServer(answer)
    sock = _socket(host, port, True)
    asyncio.run(server.run(sock, lambda: conn.send("ready")))
    print(f"echo_server[{index}] pid {os.getpid()}: connections {server.connections}, "
          f"answers {server.answers}", file=sys.stderr, flush=True)


def _announce(host: str, port: int, processes: int, pids) -> None:
    print(f"echo_server listening on {host}:{port} processes {processes} pids "
          f"{','.join(map(str, pids))}", flush=True)


def serve(host: str, port: int, processes: int = 1, answer: str = "echo") -> int:
    if processes <= 1:
        server = EchoServer(answer)
        sock = _socket(host, port, True)
        port = sock.getsockname()[1]
        asyncio.run(server.run(sock, lambda: _announce(host, port, 1, [os.getpid()])))
        print(f"echo_server pid {os.getpid()}: connections {server.connections}, "
              f"answers {server.answers}", file=sys.stderr, flush=True)
        return 0
    holder = _socket(host, port, False)                 # holds the port, takes no connection
    port = holder.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs, pipes = [], []
    for i in range(processes):
        ours, theirs = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(host, port, i, answer, theirs), name=f"echo-{i}")
        p.start()
        theirs.close()
        procs.append(p)
        pipes.append(ours)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))
    try:
        for ours, p in zip(pipes, procs):
            while not ours.poll(0.1):
                if stopping or not p.is_alive():
                    print(f"echo_server: process {p.name} did not start", file=sys.stderr)
                    return 2
            ours.recv()
        _announce(host, port, processes, [p.pid for p in procs])
        while not stopping and all(p.is_alive() for p in procs):
            multiprocessing.connection.wait([p.sentinel for p in procs], 0.2)
        return 0 if stopping else 1
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        holder.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="echo_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:3868", help="HOST:PORT (port 0: a free one)")
    p.add_argument("--processes", "-p", type=int, default=1, help="processes sharing the port")
    p.add_argument("--answer", choices=["echo", "minimal"], default="echo",
                   help="echo: the request with R cleared + Result-Code; minimal: header + Result-Code")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        return serve(host.strip("[]") or "127.0.0.1", int(port), max(1, args.processes), args.answer)
    except OSError as e:
        print(f"echo_server: cannot listen on {args.listen}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
