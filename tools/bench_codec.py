#!/usr/bin/env python3
"""Codec micro-benchmark: ocs's Diameter codec against python-diameter, on Gy.

Run from the work tree:

    python3 tools/bench_codec.py                 # about 25 s, prints a table
    python3 tools/bench_codec.py --seconds 0.5 --repeat 5
    python3 tools/bench_codec.py --json          # machine-readable results
    python3 tools/bench_codec.py --profile       # + cProfile of the ocs round trip

The messages are a realistic Gy CCR-UPDATE (Session-Id, Origin-Host/Realm,
Destination-Realm, Auth-Application-Id 4, Service-Context-Id 32251@3gpp.org,
CC-Request-Type 2, CC-Request-Number 1, Subscription-Id {E164},
Multiple-Services-Indicator, one Multiple-Services-Credit-Control {RSU {},
USU {CC-Total/Input/Output-Octets}, Service-Identifier, Rating-Group}, and
Service-Information {PS-Information {3GPP-Charging-Id, 3GPP-PDP-Type,
PDP-Address, SGSN-Address, GGSN-Address, 3GPP-IMSI-MCC-MNC, 3GPP-NSAPI,
Called-Station-Id, 3GPP-Selection-Mode, 3GPP-SGSN-MCC-MNC, 3GPP-RAT-Type}})
and its CCA (Session-Id, Result-Code, Origin-Host/Realm, Auth-Application-Id,
CC-Request-Type/Number, MSCC {GSU {CC-Total-Octets}, Rating-Group,
Validity-Time, Result-Code, Volume-Quota-Threshold (3GPP)}).

Measurements, each as operations per second on one core:

  decode CCR   bytes -> message, plus what a charging server does before rating:
               ocs: `decode_message`, which checks the full grammar (and
               value check of every AVP) + reading Session-Id, CC-Request-Type,
               CC-Request-Number, the E164 Subscription-Id-Data, the MSCC's
               Rating-Group and its USU's total/input/output octets.
               python-diameter: `Message.from_bytes` + reading the same fields
               through its attributes (it has no grammar check).
  encode CCA   build the answer from the decoded request (ocs: `answer()` +
               `add`; python-diameter: `to_answer()` + attributes) and
               serialise it to bytes.
  round trip   decode CCR + encode CCA, timed as one loop (not computed).
  round trip, ocs without grammar check: the same with decode_message(...,
               check=False), i.e. the work python-diameter does (it checks no
               grammar): the like-for-like codec comparison.
  decode CCA   the client side, for completeness: decode (+ grammar check for
  encode CCR   ocs) and read the granted quota; build and serialise a CCR.

Method: pin the process to one CPU (os.sched_setaffinity; --cpu picks which),
check that each codec decodes the other's messages to the same values, warm
up, size a batch so that it lasts about seconds/repeat, then time `--repeat`
batches with time.perf_counter (gc.collect() before each batch, gc stays
enabled during it) and report the median, min and max ops/s per measurement,
and the ratio ocs / python-diameter.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time


def _ocs_root(argv) -> str:
    """--ocs-root DIR benchmarks another checkout (e.g. `git archive HEAD | tar -x -C DIR`)."""
    for i, a in enumerate(argv):
        if a == "--ocs-root" and i + 1 < len(argv):
            return os.path.abspath(argv[i + 1])
        if a.startswith("--ocs-root="):
            return os.path.abspath(a.split("=", 1)[1])
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


OCS_ROOT = _ocs_root(sys.argv[1:])
sys.path.insert(0, OCS_ROOT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from codec_pair import OcsCodec, PyDiameterCodec, cross_check  # noqa: E402
from ocs.diameter.message import decode_message  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _batch(fn, n: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def measure(fn, seconds: float, repeat: int, warmup: float) -> dict:
    """Warm up for `warmup` s, size a batch to about seconds/repeat, time `repeat` batches."""
    n, spent = 1, 0.0
    deadline = time.perf_counter() + warmup
    while True:                       # grow the batch until it takes a measurable time
        spent = _batch(fn, n)
        if spent >= 0.02 and time.perf_counter() >= deadline:
            break
        if spent < 0.02:
            n *= 2
    per_op = spent / n
    n = max(1, int(seconds / repeat / per_op))
    rates = [n / _batch(fn, n) for _ in range(repeat)]
    return {"ops_per_s": {"median": statistics.median(rates), "min": min(rates),
                          "max": max(rates)},
            "batch": n, "samples": rates,
            "us_per_op_median": 1e6 / statistics.median(rates)}


def _git_state(root: str) -> str:
    """HEAD and the uncommitted files under ocs/ and dictionaries/, to label the figures."""
    import subprocess
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "ocs", "dictionaries"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
        return f"git {head}" + (f" + uncommitted {', '.join(dirty)}" if dirty else ", clean")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"


def pin_cpu(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this platform)"
    try:
        allowed = sorted(os.sched_getaffinity(0))
        target = cpu if cpu is not None else allowed[-1]
        os.sched_setaffinity(0, {target})
        return f"pinned to CPU {target} (of {len(allowed)} allowed)"
    except OSError as e:
        return f"not pinned ({e})"


def profile_round_trip(codec, data: bytes, seconds: float, top: int, out) -> list[dict]:
    import cProfile
    import pstats
    n = max(1000, int(seconds * 20_000))
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        codec.round_trip(data)
    prof.disable()
    st = pstats.Stats(prof)
    total = st.total_tt
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():
        if file.startswith(OCS_ROOT + os.sep):
            file = os.path.relpath(file, OCS_ROOT)
        elif file.startswith(sys.prefix):
            file = os.path.basename(file)
        rows.append({"function": func, "where": f"{file}:{line}",
                     "calls_per_op": nc / n, "tottime_share": tt / total if total else 0.0,
                     "cumtime_share": ct / total if total else 0.0})
    rows.sort(key=lambda r: r["tottime_share"], reverse=True)
    print(f"\ncProfile of the {codec.name} round trip ({n} ops; shares of profiled time, "
          f"profiler overhead included):", file=out)
    print(f"  {'tottime':>7} {'cumtime':>7} {'calls/op':>8}  function", file=out)
    for r in rows[:top]:
        print(f"  {r['tottime_share']:7.1%} {r['cumtime_share']:7.1%} {r['calls_per_op']:8.1f}  "
              f"{r['function']} ({r['where']})", file=out)
    return rows[:top]


def ocs_phases(ocs: OcsCodec, seconds: float, repeat: int, warmup: float, out) -> dict:
    """Split the ocs round trip into cumulative steps, timed without a profiler."""
    d = ocs.d
    data = ocs.encode_ccr()
    req, fields = ocs.decode_ccr(data)

    def decode_check():
        return decode_message(data, d)       # decodes and checks the grammar in one pass

    steps = [("decode_message (+check)", decode_check),
             ("+ reading the fields", lambda: ocs.decode_ccr(data)),
             ("build+encode CCA", lambda: ocs.encode_cca(req, fields)),
             ("round trip", lambda: ocs.round_trip(data))]
    res, prev = {}, 0.0
    print("\nocs round trip by step (median microseconds per op, no profiler):", file=out)
    rt_us = None
    timed = [(label, 1e6 / measure(fn, seconds, repeat, warmup)["ops_per_s"]["median"]) for label, fn in steps]
    rt_us = timed[-1][1]
    for label, us in timed:
        if label == "build+encode CCA":
            prev = 0.0
        if label == "round trip":
            print(f"  {label:<26} {us:7.1f} us", file=out)
        else:
            print(f"  {label:<26} {us:7.1f} us  (step {us - prev:5.1f} us, {(us - prev) / rt_us:4.0%} of the round trip)",
                  file=out)
        res[label] = {"cumulative_us": us, "step_us": us - prev}
        prev = us
    return res


MEASUREMENTS = (
    ("decode_ccr", "decode CCR (+check, read)"),
    ("encode_cca", "build+encode CCA"),
    ("round_trip", "round trip (decode CCR + encode CCA)"),
    ("round_trip_unchecked", "round trip, ocs without grammar check"),
    ("decode_cca", "decode CCA (+check, read)"),
    ("encode_ccr", "build+encode CCR"),
)


def workloads(codec) -> dict:
    ccr = codec.encode_ccr()
    req, fields = codec.decode_ccr(ccr)
    cca = codec.encode_cca(req, fields)
    dec_ccr, enc_cca, rt = codec.decode_ccr, codec.encode_cca, codec.round_trip
    dec_cca, enc_ccr = codec.decode_cca, codec.encode_ccr
    return {
        "decode_ccr": lambda: dec_ccr(ccr),
        "encode_cca": lambda: enc_cca(req, fields),
        "round_trip": lambda: rt(ccr),
        # python-diameter checks no grammar: its one round trip serves both rows
        "round_trip_unchecked": lambda: getattr(codec, "round_trip_unchecked", rt)(ccr),
        "decode_cca": lambda: dec_cca(cca),
        "encode_ccr": lambda: enc_ccr(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0,
                   help="timed seconds per measurement and codec, split over the repeats (default 2)")
    p.add_argument("--repeat", type=int, default=7, help="timed batches per measurement (default 7)")
    p.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per measurement (default 0.3)")
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed one)")
    p.add_argument("--only", choices=["ocs", "python-diameter"], help="benchmark one codec only")
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout (tables go to stderr)")
    p.add_argument("--profile", action="store_true",
                   help="also print a cProfile breakdown of the ocs round trip")
    p.add_argument("--ocs-root", metavar="DIR",
                   help="benchmark the ocs package and dictionaries/ found in DIR (default: this tree)")
    p.add_argument("--top", type=int, default=20, help="rows of the profile to print (default 20)")
    p.add_argument("--target", type=float, default=50_000.0,
                   help="ocs round-trip target in ops/s (default 50000)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.seconds <= 0:
        p.error("--repeat must be >= 1 and --seconds > 0")
    out = sys.stderr if args.json else sys.stdout

    pinned = pin_cpu(args.cpu)
    ocs = OcsCodec()
    pd = PyDiameterCodec()
    env = {"ocs_root": OCS_ROOT, "ocs_git": _git_state(OCS_ROOT), "python": platform.python_version(), "implementation": platform.python_implementation(),
           "machine": platform.machine(), "cpu": pinned, "python_diameter": pd.version,
           "dictionary": ocs.d.summary(), "seconds": args.seconds, "repeat": args.repeat}
    print(f"Python {env['python']} ({env['implementation']}, {env['machine']}), "
          f"python-diameter {pd.version}; {pinned}", file=out)
    print(f"ocs from {OCS_ROOT} ({env['ocs_git']}); dictionary: {env['dictionary']}", file=out)
    check = cross_check(ocs, pd, out)
    if not check["ok"]:
        print("cross-check FAILED: the figures below compare codecs that disagree", file=out)

    codecs = [c for c in (ocs, pd) if args.only in (None, c.name)]
    results: dict = {c.name: {} for c in codecs}
    print(f"\nTiming: {args.repeat} batches x ~{args.seconds / args.repeat:.2f} s per measurement "
          f"and codec, after {args.warmup} s warm-up ...", file=out)
    for c in codecs:
        w = workloads(c)
        for key, _label in MEASUREMENTS:
            results[c.name][key] = measure(w[key], args.seconds, args.repeat, args.warmup)

    # table
    names = [c.name for c in codecs]
    short = {"ocs": "ocs", "python-diameter": "pd"}
    head = f"{'ops/s':<38}" + "".join(f"{short[n] + ' median':>13}{'min':>9}{'max':>9}" for n in names)
    if len(names) == 2:
        head += f"{'ocs/pd':>8}"
    print("\n" + head, file=out)
    print("-" * len(head), file=out)
    ratios = {}
    for key, label in MEASUREMENTS:
        row = f"{label:<38}"
        for n in names:
            r = results[n][key]["ops_per_s"]
            row += f"{r['median']:>13,.0f}{r['min']:>9,.0f}{r['max']:>9,.0f}"
        if len(names) == 2:
            ratios[key] = results["ocs"][key]["ops_per_s"]["median"] / \
                results["python-diameter"][key]["ops_per_s"]["median"]
            row += f"{ratios[key]:>7.1f}x"
        print(row, file=out)
    print("", file=out)
    for n in names:
        us = "  ".join(f"{k} {results[n][k]['us_per_op_median']:.1f}" for k, _ in MEASUREMENTS)
        print(f"{n} microseconds per op (median): {us}", file=out)
    verdict = None
    if "ocs" in results:
        rt = results["ocs"]["round_trip"]["ops_per_s"]["median"]
        verdict = rt >= args.target
        print(f"\nocs round trip: {rt:,.0f}/s on one core; target {args.target:,.0f}/s: "
              f"{'MET' if verdict else 'NOT MET (' + format(rt / args.target, '.0%') + ' of target)'}",
              file=out)
        if "round_trip" in ratios:
            print(f"ocs / python-diameter round trip: {ratios['round_trip']:.1f}x", file=out)

    profile = phases = None
    if args.profile and "ocs" in results:
        phases = ocs_phases(ocs, args.seconds / 2, args.repeat, args.warmup, out)
        profile = profile_round_trip(ocs, ocs.encode_ccr(), min(args.seconds, 2.0), args.top, out)

    if args.json:
        json.dump({"environment": env, "cross_check": check, "results": results,
                   "ratio_ocs_over_python_diameter": ratios, "target_round_trips_per_s": args.target,
                   "target_met": verdict, "phases": phases, "profile": profile}, sys.stdout, indent=2)
        print()
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
