"""Short names of commands and CC-Request-Types, for logs and metric labels."""

from __future__ import annotations

COMMAND_NAMES = {257: "CER", 258: "RAR", 271: "ACR", 272: "CCR", 274: "ASR", 275: "STR",
                 280: "DWR", 282: "DPR"}
REQUEST_TYPE_NAMES = {1: "initial", 2: "update", 3: "termination", 4: "event"}


def command_name(code: int) -> str:
    """"CCR" for 272 (requests and answers alike), the number for others."""
    return COMMAND_NAMES.get(code) or str(code)


def request_labels(msg) -> tuple:
    """(command, CC-Request-Type) of a request, or of the request an answer answers:
    ("CCR", "initial"), ("DWR", "")."""
    code = msg.code
    kind = ""
    if code == 272:
        try:
            kind = REQUEST_TYPE_NAMES.get(msg.get("CC-Request-Type"), "")
        except Exception:                   # noqa: BLE001 - an undecodable value: no type
            kind = ""
    return (command_name(code), kind)
