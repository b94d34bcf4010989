"""Orchestration of the load generator: `run_load` (the API), how the load is
split over the driver processes (`partition`), one driver in this process
(`_run_part`), and several in spawned processes started together, with a
combined progress line and their raw results collected (`_run_processes`,
`_child`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import queue as queue_module
import sys
import time

from ..diameter.dictload import load_directory
from .common import LoadOptions
from .driver import Driver
from .report import merge


async def run_load(options) -> dict:
    """Run the load described by options (LoadOptions or a dict of its fields) and
    return the merged result (see `merge`). ValueError on bad options, among them a
    host that is not a loopback address."""
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


def _split(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def partition(options: LoadOptions, duration: float | None) -> list[dict]:
    """What each driver process does: its Origin-Host numbers, sessions, request
    budget, rate and subscriber slice [lo, hi)."""
    o = options
    p = o.processes
    parts = []
    host = o.host_first
    sub = o.subscriber_first
    for i in range(p):
        nconn = _split(o.connections, p, i)
        nsub = _split(o.subscribers, p, i)
        if nsub == 0:                     # fewer subscribers than processes: share them all
            lo, hi = o.subscriber_first, o.subscriber_first + o.subscribers
        else:
            lo, hi = sub, sub + nsub
            sub += nsub
        parts.append({
            "index": i,
            "hosts": list(range(host, host + nconn)),
            "sessions": max(1, _split(o.sessions, p, i)),
            "requests": None if o.requests is None else _split(o.requests, p, i),
            "rate": None if o.rate is None else o.rate / p,
            "subscribers": (lo, hi),
            "duration": duration,
        })
        host += nconn
    return [x for x in parts if x["requests"] is None or x["requests"] > 0]


async def _run_part(options: LoadOptions, part: dict, shared=None, go=None, ready=None) -> dict:
    dictionary = load_directory(options.dictionaries)
    driver = Driver(options, part, dictionary, shared)
    await driver.connect()
    if ready is not None:
        ready()
    if go is not None:
        await go()
    return await driver.run()


def _child(options_dict: dict, part: dict, results, go_event, counters) -> None:
    """Entry point of a driver process (multiprocessing, spawn)."""
    options = LoadOptions(**options_dict)
    options.progress = False

    async def go():
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, go_event.wait, options.timeout + 30)
        if not ok:
            raise TimeoutError("no start signal from the parent")

    try:
        raw = asyncio.run(_run_part(options, part, (counters, part["index"]), go,
                                    lambda: results.put(("ready", part["index"], None))))
        results.put(("result", part["index"], raw))
    except BaseException as e:  # report to the parent whatever it is
        results.put(("error", part["index"], f"{type(e).__name__}: {e}"))


async def _run_processes(options: LoadOptions, parts: list[dict]) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    go_event = ctx.Event()
    counters = ctx.Array("q", 2 * len(parts), lock=False)
    opts = dataclasses.asdict(options)
    procs = [ctx.Process(target=_child, args=(opts, part, results, go_event, counters), daemon=True)
             for part in parts]
    for p in procs:
        p.start()
    raws: dict[int, dict] = {}
    errors: list[str] = []
    ready = 0
    started = None
    deadline = time.monotonic() + options.timeout + 30        # spawning + connecting
    prev = 0
    next_progress = None
    try:
        while len(raws) + len(errors) < len(parts):
            try:
                kind, index, payload = results.get_nowait()
            except queue_module.Empty:
                now = time.monotonic()
                if started is None and now > deadline:
                    errors.append("driver processes did not get ready in time")
                    break
                if all(not p.is_alive() for p in procs):
                    await asyncio.sleep(0.2)              # a last result may still be in the pipe
                    if results.empty():
                        errors.append("a driver process exited without a result")
                        break
                if started is not None and options.progress and now >= next_progress:
                    sent = sum(counters[2 * i] for i in range(len(parts)))
                    answered = sum(counters[2 * i + 1] for i in range(len(parts)))
                    print(f"[loadgen] {now - started:5.1f} s  requests {sent}  answers {answered}  "
                          f"rate {answered - prev}/s  ({len(parts)} processes)", file=sys.stderr, flush=True)
                    prev = answered
                    next_progress += 1.0
                await asyncio.sleep(0.02)
                continue
            if kind == "ready":
                ready += 1
                if ready == len(parts):
                    go_event.set()
                    started = time.monotonic()
                    next_progress = started + 1.0
            elif kind == "result":
                raws[index] = payload
            else:
                errors.append(f"process {index}: {payload}")
                go_event.set()                   # let the others run to their end rather than hang
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return [raws[i] for i in sorted(raws)]
