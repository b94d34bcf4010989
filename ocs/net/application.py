"""The handler registry: interface management's dispatch table.

Like a BRM Connection Manager running Facilities Modules, the node dispatches
each (Application-Id, Command-Code) to one handler. A handler is an async
callable `handler(request, context) -> Message` returning the answer, or an
object with `begin(request, context, respond)` that answers through the
`respond` callback (no task per request: the credit-control handler); it only
ever sees requests that passed the peer layer's checks (header bits, grammar,
duplicates). Requests with no handler are answered 3001 by the peer layer, so
nothing is granted by accident: credit control plugs in here when it lands.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import attrs

from ..diameter.events import PeerIdentity
from ..diameter.message import Message


@attrs.frozen
class RequestContext:
    """What a handler knows about where a request came from."""

    peer: PeerIdentity
    connection_id: int
    received_at: float


Handler = Callable[[Message, RequestContext], Awaitable[Message]]


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[int, int], Handler] = {}

    def register(self, application_id: int, command_code: int, handler: Handler) -> None:
        key = (application_id, command_code)
        if key in self._handlers:
            raise ValueError(f"a handler for application {application_id} command {command_code} "
                             "is already registered")
        self._handlers[key] = handler

    def get(self, application_id: int, command_code: int) -> Handler | None:
        return self._handlers.get((application_id, command_code))

    def supports(self, application_id: int, command_code: int) -> bool:
        return (application_id, command_code) in self._handlers

    def keys(self) -> list[tuple[int, int]]:
        return sorted(self._handlers)
