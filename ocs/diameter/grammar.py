"""Grammar checks for messages that were built, not received.

Received messages are checked while they are decoded (`decoder.walk`, whose
docstring lists the RFC 6733 §7 rules); this module applies the same walk to a
message we hold as objects, e.g. to validate what a handler built,
and keeps `first_error` for callers of `decode_message`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .decoder import example_avp, walk
from .errors import AvpError

if TYPE_CHECKING:
    from .message import Message


def check_message(msg: "Message") -> AvpError | None:
    """Check a message against its command's grammar (None if unknown command)."""
    cmd = msg.dictionary.command(msg.code, msg.is_request)
    if cmd is None:
        return None
    buf = msg.raw if msg.raw is not None else msg.encode()
    return walk(buf, 20, len(buf), cmd.grammar, msg.dictionary)[1]


def first_error(errors: list[AvpError], msg: "Message") -> AvpError | None:
    """The first problem of a received message (decode_message already checked
    it against its grammar), or the grammar's verdict for a built one."""
    if errors:
        return errors[0]
    if msg.raw is not None:
        return None
    return check_message(msg)


__all__ = ["check_message", "example_avp", "first_error"]
