"""`ocs rate FILE`: offline (post-paid) charging of usage records.

Reads usage records (CSV or JSON lines, format: docs/usage-records.md), rates
each one in a transaction function of its own (ocs.charging.offline.rate_record)
submitted to the store's writer BATCH at a time (the store commits a batch at
once and isolates a function that raises, so a rejected record does not sink
its batch), and writes what cannot be rated to a reject file, one JSON object a
line: {"line": N, "record": "<the input line>", "reason": "..."}. The reader
(ocs/rate_input.py) turns any bad line into a reject; only an unusable file or
CSV header stops the run. The reject file is written to a temp file next to
it and renamed onto it when the run completes, so a run that fails or is
interrupted leaves the previous one's reject file as it was; it may not be the
input file. A record is charged at most once: re-running a file (after a
crash, or a fixed reject file) charges only what was not rated yet, and a
different record under an id already rated is rejected. Exit status: 0 every
record rated or already rated, 1 some rejected, 2 a usage, file or store error
(one line on stderr).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import stat
import sys
import time

from .charging import offline
from .charging.records import RecordError
from .rate_input import UsageError, chain, open_input, read

COMMAND = "rate"
BATCH = 500
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


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
        with open_input(args.file) as fh:
            _not_the_input(fh, args.file, rejects)
            source = read(fh, fmt, args.file)
            first = next(source, None)          # the header is checked before anything is written
            with _reject_file(rejects) as out, open_store(config) as store:
                items = source if first is None else chain(first, source)
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


def _not_the_input(fh, name: str, rejects: str) -> None:
    """Refuse a reject file that is the input: it would replace the records being read."""
    try:
        st = os.stat(rejects)
    except OSError:
        return                                      # no such file (or cannot be written, later)
    if not stat.S_ISREG(st.st_mode):
        return                                      # /dev/null, a pipe: written in place
    try:
        same = os.path.samestat(os.fstat(fh.fileno()), st)
    except (OSError, ValueError, AttributeError):   # no file descriptor (a test's stdin)
        same = name != "-" and os.path.realpath(name) == os.path.realpath(rejects)
    if same:
        raise UsageError(f"--rejects {rejects} is the input file: give another path")


@contextlib.contextmanager
def _reject_file(path: str):
    """A text file for rejects: a temp file next to `path`, renamed onto it when the
    block completes, removed when it raises (the previous reject file stays as it
    was). A `path` that exists and is not a regular file (/dev/null, a pipe) is
    written in place."""
    target = os.path.realpath(path)         # through a symbolic link, as open() would
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):
            tmp, out = None, open(path, "w", encoding="utf-8", errors="backslashreplace")
        else:
            tmp, fd = _temp_next_to(target, st)
            out = open(fd, "w", encoding="utf-8", errors="backslashreplace")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    done = False
    try:
        with out:
            yield out
            try:
                out.flush()
                if tmp is not None:
                    os.fsync(out.fileno())
            except OSError as e:
                raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
        if tmp is not None:
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
        done = True
    finally:
        if tmp is not None and not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _temp_next_to(target: str, st) -> tuple[str, int]:
    folder, base = os.path.split(target)
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)    # umask applies
        except FileExistsError:
            continue
        if st is not None:
            with contextlib.suppress(OSError):
                os.fchmod(fd, stat.S_IMODE(st.st_mode))     # keep the old reject file's mode
        return tmp, fd
    raise FileExistsError(f"no free temp file name next to {target}")


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
