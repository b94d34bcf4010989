#!/usr/bin/env python3
"""Credit-control benchmark: the node with its store, driven by tools/loadgen.py.

    python3 tools/bench_charging.py                       # 1,000,000 accounts, fsync then os, 3 x 10 s
    python3 tools/bench_charging.py --rate 10000          # latency at a fixed 10,000 CCR/s
    python3 tools/bench_charging.py --accounts 10000 --runs 1 --duration 3    # a quick look

For each durability setting (`--durability`, default "fsync,os"), in a fresh
temporary folder:

1. write a config file with the node on 127.0.0.1:<port> and
       [store]
       path = "<tmp>/ocs.lmdb"
       durability = "fsync"      # or "os"
2. provision the accounts: `python3 -m ocs accounts --config <toml> generate
   --count N` (subscribers "4670" + 0000000..N-1, as loadgen's defaults use);
3. start the node: `python3 -m ocs serve --config <toml> --listen 127.0.0.1:<port>`
   and wait until it accepts connections;
4. run loadgen `--runs` times in its own process (`python3 tools/loadgen.py
   --json`), each run with `--sessions` concurrent sessions over
   `--connections` connections for `--duration` seconds (or at `--rate`);
5. stop the node (SIGTERM: it sends DPR to its peers) and delete the folder
   (`--keep` keeps it, with the node's log).

Prints one line per durability setting: concurrent sessions, CCR/s, latency
p50/p99/max over all request types (medians of the runs) and the answers by
Result-Code of the median run (by CCR/s). `--json` prints every run as well.

The store (`[store]`) and `ocs accounts generate` belong to the charging
release: with an ocs that has neither, the tool stops at once and says so.
`--pin` puts the node on CPU 0 and loadgen on CPU 1 (2-core machines).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LOADGEN = os.path.join(ROOT, "tools", "loadgen.py")


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: str, port: int, durability: str) -> str:
    path = os.path.join(folder, "ocs.toml")
    store = os.path.join(folder, "ocs.lmdb")
    with open(path, "w") as f:
        f.write("[listen]\n"
                f'address = "127.0.0.1"\nport = {port}\n\n'
                "[store]\n"
                f"path = {json.dumps(store)}\n"
                f"durability = {json.dumps(durability)}\n")
    return path


def _pin(cpu: int | None):
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def preflight(python: str, config: str) -> None:
    """Fail with a clear message when this ocs has no store or no account generator."""
    check = subprocess.run(
        [python, "-c", "import sys; from ocs.config import load_config, ConfigError\n"
                       "try:\n    load_config(sys.argv[1])\n"
                       "except ConfigError as e:\n    print(e); sys.exit(3)\n", config],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        raise BenchError(
            "this ocs does not accept the [store] section in its config file "
            f"({(check.stdout + check.stderr).strip()}): the LMDB store is not there yet")
    help_ = subprocess.run([python, "-m", "ocs", "accounts", "generate", "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    if help_.returncode != 0:
        msg = (help_.stderr or help_.stdout).strip().splitlines()
        raise BenchError("this ocs has no `ocs accounts generate` command "
                         f"({msg[-1] if msg else 'exit ' + str(help_.returncode)}): "
                         "account provisioning is not there yet")


def generate_accounts(python: str, config: str, count: int, log) -> float:
    t = time.monotonic()
    # `--config` belongs to `ocs accounts` (its [store] names the LMDB folder)
    r = subprocess.run([python, "-m", "ocs", "accounts", "--config", config, "generate",
                        "--count", str(count)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"`ocs accounts generate --count {count}` failed (exit {r.returncode}):\n"
                         f"{(r.stderr or r.stdout).strip()}")
    elapsed = time.monotonic() - t
    log(f"provisioned {count} accounts in {elapsed:.1f} s")
    return elapsed


def start_node(python: str, config: str, port: int, folder: str, cpu: int | None,
               timeout: float = 120.0, extra: list[str] | tuple = ()) -> tuple[subprocess.Popen, str]:
    """`ocs serve` (with the extra flags) on 127.0.0.1:port, once it accepts connections."""
    log_path = os.path.join(folder, "node.log")
    log_file = open(log_path, "w")
    proc = subprocess.Popen([python, "-m", "ocs", "serve", "--config", config,
                             "--listen", f"127.0.0.1:{port}", *extra], cwd=ROOT, stdout=log_file,
                            stderr=subprocess.STDOUT, preexec_fn=_pin(cpu))
    log_file.close()
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"the node exited with {proc.returncode} at start-up:\n{_tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, log_path
        except OSError:
            if time.monotonic() > deadline:
                stop_node(proc)
                raise BenchError(f"the node did not listen on 127.0.0.1:{port} within {timeout} s:\n"
                                 f"{_tail(log_path)}")
            time.sleep(0.2)


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loadgen_command(python: str, args, port: int) -> list[str]:
    """The loadgen command line (JSON out) of the benchmark options in args."""
    cmd = [python, LOADGEN, "--json", "--host", "127.0.0.1", "--port", str(port),
           "--connections", str(args.connections), "--sessions", str(args.sessions),
           "--updates", str(args.updates), "--subscribers", str(args.accounts),
           "--processes", str(args.processes), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--octets", str(args.octets),
           "--event-ratio", str(args.event_ratio)]
    if args.rate:
        cmd += ["--rate", str(args.rate)]
    if args.quiet:
        cmd.append("--quiet")
    return cmd


def run_loadgen(python: str, args, port: int, cpu: int | None) -> dict:
    cmd = loadgen_command(python, args, port)
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=_pin(cpu),
                       timeout=args.duration + 120)
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"loadgen failed (exit {r.returncode}): {r.stdout.strip()[-2000:]}") from None


def summarize(durability: str, runs: list[dict]) -> dict:
    def med(get):
        values = [get(r) for r in runs]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None
    by_rate = sorted(runs, key=lambda r: r["ccr_per_s"])
    median_run = by_rate[(len(by_rate) - 1) // 2]
    return {
        "durability": durability,
        "sessions": median_run["sessions"],
        "ccr_per_s": med(lambda r: r["ccr_per_s"]),
        "p50_ms": med(lambda r: r["latency_ms"]["all"]["p50"]),
        "p99_ms": med(lambda r: r["latency_ms"]["all"]["p99"]),
        "max_ms": med(lambda r: r["latency_ms"]["all"]["max"]),
        "result_codes": median_run["result_codes"],
        "mscc_result_codes": median_run["mscc_result_codes"],
        "unanswered": sum(r["unanswered"] for r in runs),
        "driver_cpu_us_per_request": med(lambda r: r.get("driver_cpu_us_per_request")),
    }


def _fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict], args) -> str:
    mode = f"at {args.rate:g} CCR/s" if args.rate else "as fast as possible"
    out = [f"# {args.accounts} accounts, {args.connections} connections, {args.updates} updates/session, "
           f"{mode}, medians of {args.runs} run(s) of {args.duration:g} s",
           f"{'durability':10} {'sessions':>8} {'CCR/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
           "  answers by Result-Code (median run)"]
    for r in rows:
        codes = ", ".join(f"{k}: {v}" for k, v in r["result_codes"].items())
        extra = f"  (unanswered {r['unanswered']})" if r["unanswered"] else ""
        out.append(f"{r['durability']:10} {r['sessions']:8} {_fmt(r['ccr_per_s'], 0):>8} "
                   f"{_fmt(r['p50_ms']):>8} {_fmt(r['p99_ms']):>8} {_fmt(r['max_ms']):>8}  {codes}{extra}")
    return "\n".join(out)


def bench(args) -> dict:
    python = args.python
    cpu_node, cpu_load = (0, 1) if args.pin else (None, None)
    log = (lambda m: None) if args.quiet else (lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True))
    results = {"settings": vars(args).copy(), "durability": []}
    for durability in args.durability:
        folder = tempfile.mkdtemp(prefix=f"ocs-bench-{durability}-")
        proc = None
        try:
            port = args.port or free_port()
            config = write_config(folder, port, durability)
            preflight(python, config)
            provision = generate_accounts(python, config, args.accounts, log)
            proc, node_log = start_node(python, config, port, folder, cpu_node)
            log(f"node up on 127.0.0.1:{port} (durability {durability}, log {node_log})")
            runs = []
            for i in range(args.runs):
                r = run_loadgen(python, args, port, cpu_load)
                log(f"{durability} run {i + 1}/{args.runs}: {r['ccr_per_s']:.0f} CCR/s, "
                    f"p99 {r['latency_ms']['all']['p99']} ms, codes {r['result_codes']}")
                runs.append(r)
                if proc.poll() is not None:
                    raise BenchError(f"the node exited with {proc.returncode} during run {i + 1}:\n"
                                     f"{_tail(node_log)}")
            summary = summarize(durability, runs)
            summary["provision_s"] = round(provision, 2)
            summary["runs"] = [{k: r[k] for k in ("requests", "answers", "ccr_per_s", "latency_ms",
                                                  "result_codes", "mscc_result_codes", "elapsed_s",
                                                  "driver_cpu_us_per_request")} for r in runs]
            results["durability"].append(summary)
        finally:
            if proc is not None:
                stop_node(proc)
            if args.keep:
                log(f"kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_charging", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--accounts", type=int, default=1_000_000, help="accounts provisioned (and subscribers used)")
    a("--runs", type=int, default=3, help="loadgen runs per durability setting (medians reported)")
    a("--duration", type=float, default=10.0, help="seconds per run")
    a("--warmup", type=float, default=0.0, help="seconds of each run left out of the figures")
    a("--sessions", type=int, default=1000, help="concurrent sessions")
    a("--connections", type=int, default=4)
    a("--processes", type=int, default=1, help="loadgen driver processes")
    a("--updates", type=int, default=2, help="CCR-UPDATEs per session")
    a("--octets", type=int, default=1_000_000, help="CC-Total-Octets reported per U and T")
    a("--event-ratio", type=float, default=0.0, help="fraction of sessions that are one CCR-EVENT")
    a("--rate", type=float, default=None, help="fixed CCR/s (latency at a rate); default: as fast as possible")
    a("--durability", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
      default=["fsync", "os"], help="comma-separated [store] durability settings, in order")
    a("--port", type=int, default=0, help="node port (0: a free one)")
    a("--pin", action="store_true", help="node on CPU 0, loadgen on CPU 1")
    a("--python", default=sys.executable, help="Python that runs the node and loadgen")
    a("--keep", action="store_true", help="keep the temporary folders (store, config, node log)")
    a("--json", action="store_true", help="print all results as JSON")
    a("--quiet", "-q", action="store_true", help="no progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.accounts < 1 or args.accounts > 10_000_000:
        print("bench_charging: --accounts must be 1..10,000,000 (subscribers 4670 + 7 digits)",
              file=sys.stderr)
        return 2
    if args.runs < 1 or not args.durability:
        print("bench_charging: need at least one run and one durability setting", file=sys.stderr)
        return 2
    try:
        results = bench(args)
    except BenchError as e:
        print(f"bench_charging: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(table(results["durability"], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
