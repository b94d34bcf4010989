"""`ocs rate FILE`: offline (post-paid) charging of usage records.

Reads usage records (CSV or JSON lines, format: docs/usage-records.md), rates
each one in a transaction function of its own (ocs.charging.offline.rate_record)
submitted to the store's writer BATCH at a time (the store commits a batch at
once and isolates a function that raises, so a rejected record does not sink
its batch), and writes what cannot be rated to a reject file, one JSON object a
line: {"line": N, "record": "<the input line>", "reason": "..."}. A record is
charged at most once: re-running a file (after a crash, or a fixed reject file)
charges only what was not rated yet. Exit status: 0 every record rated or
already rated, 1 some rejected, 2 a usage, file or store error (one line on
stderr).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import sys
import time

from .charging import offline
from .charging.records import RecordError

COMMAND = "rate"
BATCH = 500
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


class UsageError(Exception):
    """Bad arguments or an unusable input file: exit status 2."""


def add_parser(sub) -> None:
    r = sub.add_parser(COMMAND, help="rate usage records offline (post-paid: CSV or JSON lines)")
    r.add_argument("file", metavar="FILE", help="usage records (docs/usage-records.md), or - for stdin")
    r.add_argument("--format", choices=["csv", "jsonl"],
                   help="input format (default: by extension, .csv or .jsonl/.json)")
    r.add_argument("--rejects", metavar="PATH",
                   help="where records that cannot be rated go (default FILE.rejects)")
    r.add_argument("--config", help="TOML configuration file (its [store] is used)")
    r.add_argument("--store", help="LMDB folder (overrides [store] path)")


def run(args, config) -> int:
    from .service import open_store
    from .store.base import StoreError
    now = int(time.time())
    try:
        fmt = _format(args.file, args.format)
        rejects = _rejects_path(args.file, args.rejects)
        if not os.path.isdir(config.store.path):
            raise UsageError(f"no store at {config.store.path} (load plans and accounts first: "
                             f"ocs accounts load)")
        with _open_input(args.file) as fh:
            source = _read(fh, fmt, args.file)
            first = next(source, None)          # the header is checked before anything is written
            try:
                out = open(rejects, "w", encoding="utf-8")
            except OSError as e:
                raise UsageError(f"cannot write {rejects}: {e.strerror or e}") from None
            with out, open_store(config) as store:
                items = source if first is None else _chain(first, source)
                totals = _rate(items, store, now, out)
    except (UsageError, StoreError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    print(f"rated {totals['rated']}, already rated {totals['already_rated']}, "
          f"rejected {totals['rejected']} (-> {rejects})")
    for cur, (amount, unpaid) in sorted(totals["money"].items()):
        print(f"{cur}: amount {amount}, unpaid {unpaid} (minor units)")
    return 1 if totals["rejected"] else 0


def _format(path: str, given: str | None) -> str:
    if given:
        return given
    fmt = FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise UsageError(f"cannot tell the format of {path}: give --format csv or --format jsonl")
    return fmt


def _rejects_path(path: str, given: str | None) -> str:
    if given:
        return given
    if path == "-":
        raise UsageError("reading standard input: give --rejects PATH")
    return path + ".rejects"


@contextlib.contextmanager
def _open_input(path: str):
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    with fh:
        yield fh


def _chain(first, rest):
    yield first
    yield from rest


def _lines(fh, name: str):
    """(line number, text, None) or (line number, text with U+FFFD, reason) for each non-blank line."""
    try:
        for n, raw in enumerate(fh, 1):
            raw = raw.rstrip(b"\r\n")
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]                    # a UTF-8 byte order mark (spreadsheets write one)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, raw.decode("utf-8", "replace"), f"not UTF-8 (octet {e.start + 1})"
                continue
            if text.strip():
                yield n, text, None
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}") from None


def _read(fh, fmt: str, name: str):
    """(line number, input line, UsageRecord or None, reason or None) for each record."""
    lines = _lines(fh, name)
    header = None
    if fmt == "csv":
        for n, text, bad in lines:
            if bad:
                raise UsageError(f"{name}: header line {n} is {bad}")
            header = [c.strip() for c in _csv_row(text)]
            problem = offline.header_problem(header)
            if problem:
                raise UsageError(f"{name}: header line {n}: {problem}")
            break
    for n, text, bad in lines:
        fields = None
        if bad is None:
            fields, bad = _csv_fields(text, header) if fmt == "csv" else _json_fields(text)
        if bad is None:
            try:
                yield n, text, offline.parse_record(fields, n), None
                continue
            except offline.RecordRejected as e:
                bad = e.reason
        yield n, text, None, bad


def _csv_row(text: str) -> list:
    return next(csv.reader([text], strict=True))


def _csv_fields(text: str, header: list) -> tuple[dict | None, str | None]:
    try:
        row = _csv_row(text)
    except csv.Error as e:
        return None, f"not a CSV row: {e}"
    if len(row) != len(header):
        return None, f"{len(row)} columns, the header has {len(header)}"
    return dict(zip(header, row)), None


def _json_fields(text: str) -> tuple[dict | None, str | None]:
    try:
        fields = json.loads(text)
    except ValueError as e:
        return None, f"not JSON: {getattr(e, 'msg', e)}"
    if not isinstance(fields, dict):
        return None, "not a JSON object"
    return fields, None


def _rate(items, store, now: int, out) -> dict:
    totals = {"rated": 0, "already_rated": 0, "rejected": 0, "money": {}}
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            _flush(batch, store, now, out, totals)
            batch = []
    _flush(batch, store, now, out, totals)
    return totals


def _flush(batch: list, store, now: int, out, totals: dict) -> None:
    """Rate a batch; its outcomes are reported in input order."""
    futures = [store.submit(functools.partial(offline.rate_record, rec=rec, now=now))
               if rec is not None else None for _, _, rec, _ in batch]
    for (n, text, rec, reason), fut in zip(batch, futures):
        if fut is not None:
            try:
                result = fut.result()
            except offline.RecordRejected as e:
                reason = e.reason
            except RecordError as e:
                reason = f"stored record: {e}"
            else:
                totals[result["status"]] += 1
                if result["status"] == "rated":
                    e = result["event"]
                    amount, unpaid = totals["money"].get(e["currency"], (0, 0))
                    totals["money"][e["currency"]] = (amount + e["amount"], unpaid + e["unpaid"])
                continue
        totals["rejected"] += 1
        out.write(json.dumps({"line": n, "record": text, "reason": reason}, ensure_ascii=False) + "\n")
    out.flush()
