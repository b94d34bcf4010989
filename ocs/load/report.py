"""Results of the load generator: latency percentiles, the merge of the raw
results of the driver processes into one result (`merge`) and its text form
(`format_result`).
"""

from __future__ import annotations

import array
import dataclasses

from .common import KINDS, LoadOptions


def _percentiles(values: array.array) -> dict:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    s = sorted(values)
    n = len(s)

    def q(f):                          # nearest rank
        k = max(0, min(n - 1, int(-(-f * n // 1)) - 1))
        return round(s[k] * 1000.0, 3)
    return {"count": n, "p50": q(0.50), "p95": q(0.95), "p99": q(0.99),
            "max": round(s[-1] * 1000.0, 3), "mean": round(sum(s) / n * 1000.0, 3)}


def _add_counts(into: dict, counts: dict) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


def merge(raws: list[dict], options: LoadOptions | None = None) -> dict:
    """The result of one or more driver processes (their `raw_result`s)."""
    lat = [array.array("d") for _ in KINDS]
    by_type = {}
    codes: dict = {}
    mscc: dict = {}
    for k, name in enumerate(KINDS):
        t_codes: dict = {}
        t_mscc: dict = {}
        for r in raws:
            a = array.array("d")
            a.frombytes(r["lat"][k])
            lat[k].extend(a)
            _add_counts(t_codes, r["codes"][k])
            _add_counts(t_mscc, r["mscc_codes"][k])
        _add_counts(codes, t_codes)
        _add_counts(mscc, t_mscc)
        by_type[name] = {"requests": sum(r["sent"][k] for r in raws),
                         "answers": sum(r["answered"][k] for r in raws),
                         "result_codes": dict(sorted(t_codes.items())),
                         "mscc_result_codes": dict(sorted(t_mscc.items())),
                         "latency_ms": _percentiles(lat[k])}
    all_lat = array.array("d")
    for a in lat:
        all_lat.extend(a)
    measured = sum(r["measured"] for r in raws)
    t0 = min(r["t_measure"] for r in raws) if raws else 0.0
    t1 = max(r["t_end"] for r in raws) if raws else 0.0
    elapsed = max(t1 - t0, 1e-9)
    requests = sum(sum(r["sent"]) for r in raws)
    answers = sum(sum(r["answered"]) for r in raws)
    per_process = []
    for r in raws:
        e = max(r["t_end"] - r["t_measure"], 1e-9)
        per_process.append({"index": r["index"], "connections": len(r["connections"]),
                            "sessions": r["sessions"], "requests": sum(r["sent"]),
                            "answers": sum(r["answered"]), "result_codes": _sum_kinds(r["codes"]),
                            "ccr_per_s": round(r["measured"] / e, 1), "stop_reason": r["stop_reason"]})
    out = {
        "requests": requests,
        "answers": answers,
        "unanswered": requests - answers,
        "result_codes": dict(sorted(codes.items())),
        "mscc_result_codes": dict(sorted(mscc.items())),
        "ccr_per_s": round(measured / elapsed, 1) if measured else 0.0,
        "elapsed_s": round(elapsed, 3),
        "measured_answers": measured,
        "latency_ms": {"all": _percentiles(all_lat), **{n: by_type[n]["latency_ms"] for n in KINDS}},
        "by_type": by_type,
        "sessions": sum(r["sessions"] for r in raws),
        "sessions_started": sum(r["sessions_started"] for r in raws),
        "sessions_completed": sum(r["sessions_completed"] for r in raws),
        "connections": [c for r in raws for c in r["connections"]],
        "dpa_received": sum(r["dpa"] for r in raws),
        # CPU the driver itself used (all its processes), per request: to check it is not the bottleneck
        "driver_cpu_s": round(sum(r["cpu_s"] for r in raws), 3),
        "driver_cpu_us_per_request": round(sum(r["cpu_s"] for r in raws) * 1e6 / requests, 1) if requests else None,
        "lost": sum(r["lost"] for r in raws),
        "unmatched_answers": sum(r["unmatched"] for r in raws),
        "processes": len(raws),
        "per_process": per_process,
        "stop_reason": ", ".join(sorted({r["stop_reason"] for r in raws})),
        "notes": [n for r in raws for n in r["notes"]],
    }
    if options is not None:
        out["options"] = dataclasses.asdict(options)
    return out


def _sum_kinds(per_kind: list[dict]) -> dict:
    out: dict = {}
    for d in per_kind:
        _add_counts(out, d)
    return dict(sorted(out.items()))


def _codes_text(codes: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in codes.items()) or "none"


def format_result(r: dict) -> str:
    o = r.get("options", {})
    lines = [
        f"target        {o.get('host')}:{o.get('port')}  {len(r['connections'])} connection(s), "
        f"{r['sessions']} sessions, {r['processes']} process(es), "
        f"{'rate ' + str(o.get('rate')) + '/s' if o.get('rate') else 'as fast as possible'}",
        f"requests      {r['requests']}  answers {r['answers']}  unanswered {r['unanswered']}"
        f"  (stop: {r['stop_reason']})",
        f"result codes  {_codes_text(r['result_codes'])}",
        f"MSCC codes    {_codes_text(r['mscc_result_codes'])}",
        f"sessions      started {r['sessions_started']}  completed {r['sessions_completed']}",
        f"throughput    {r['ccr_per_s']:.0f} CCR/s over {r['elapsed_s']:.2f} s  (driver CPU "
        f"{r['driver_cpu_us_per_request']} us/request)",
        "latency ms     count      p50      p95      p99      max",
    ]
    for name in ("all",) + KINDS:
        s = r["latency_ms"][name]
        if s["count"]:
            lines.append(f"  {name:10} {s['count']:8} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} "
                         f"{s['max']:8.2f}")
    for name in KINDS:
        t = r["by_type"][name]
        if t["requests"]:
            lines.append(f"  CCR-{name}: {t['requests']} sent, codes {_codes_text(t['result_codes'])}")
    for n in r["notes"][:10]:
        lines.append(f"note: {n}")
    return "\n".join(lines)
