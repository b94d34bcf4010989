"""The reader of `ocs rate` (ocs/rate.py): usage records from CSV or JSON lines
(docs/usage-records.md), one (line number, input line, record or None, reason
or None) at a time.

Whatever one line holds (a broken quote, invalid UTF-8, JSON nested 200,000
deep, a 5,000-digit number, a lone surrogate) it becomes a reject with a
reason and the lines after it are still read: one bad line must not stop a
file on every re-run. Only an unusable file is an error (UsageError, exit 2):
it cannot be opened or read, or its CSV header cannot be parsed or names
unknown columns.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys

from .charging import offline

REASON_CHARS = 300       # an exception's message is cut to this in a reason


class UsageError(Exception):
    """Bad arguments or an unusable input file: exit status 2."""


@contextlib.contextmanager
def open_input(path: str):
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    with fh:
        yield fh


def chain(first, rest):
    yield first
    yield from rest


def lines(fh, name: str):
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


def read(fh, fmt: str, name: str):
    """(line number, input line, UsageRecord or None, reason or None) for each record."""
    source = lines(fh, name)
    header = None
    if fmt == "csv":
        for n, text, bad in source:
            if bad:
                raise UsageError(f"{name}: header line {n} is {bad}")
            try:
                header = [c.strip() for c in csv_row(text)]
            except csv.Error as e:
                raise UsageError(f"{name}: header line {n} is not a CSV row: {e}") from None
            problem = offline.header_problem(header)
            if problem:
                raise UsageError(f"{name}: header line {n}: {problem}")
            break
    for n, text, bad in source:
        rec = None
        if bad is None:
            try:
                fields, bad = csv_fields(text, header) if fmt == "csv" else json_fields(text)
                if bad is None:
                    rec = offline.parse_record(fields, n)
            except offline.RecordRejected as e:
                bad = e.reason
            except Exception as e:               # whatever else one line can do: reject it, read on
                bad = one_line(f"cannot be read: {type(e).__name__}: {e}")
        yield n, text, rec, bad


def one_line(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS] + "..."


def csv_row(text: str) -> list:
    return next(csv.reader([text], strict=True))


def csv_fields(text: str, header: list) -> tuple[dict | None, str | None]:
    try:
        row = csv_row(text)
    except csv.Error as e:
        return None, f"not a CSV row: {e}"
    if len(row) != len(header):
        return None, f"{len(row)} columns, the header has {len(header)}"
    return dict(zip(header, row)), None


def json_fields(text: str) -> tuple[dict | None, str | None]:
    try:
        fields = json.loads(text)
    except RecursionError:
        return None, "not JSON: nested too deeply"
    except ValueError as e:
        return None, one_line(f"not JSON: {getattr(e, 'msg', e)}")
    if not isinstance(fields, dict):
        return None, "not a JSON object"
    return fields, None
