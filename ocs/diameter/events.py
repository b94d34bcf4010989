"""Events a `PeerConnection` hands to its owner (named in the past tense)."""

from __future__ import annotations

import attrs

from .message import Message


@attrs.frozen
class PeerIdentity:
    """What a peer told us in its CER or CEA (RFC 6733 §5.3)."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple = ()
    vendor_id: int = 0
    product_name: str = ""
    origin_state_id: int | None = None
    auth_application_ids: frozenset = frozenset()
    acct_application_ids: frozenset = frozenset()
    supported_vendor_ids: frozenset = frozenset()
    common_application_ids: frozenset = frozenset()


@attrs.frozen
class PeerOpened:
    """Capabilities were exchanged; the connection is R-Open or I-Open."""

    peer: PeerIdentity


@attrs.frozen
class RequestReceived:
    """A valid application request for a handler; answer it with send_answer."""

    message: Message


@attrs.frozen
class AnswerReceived:
    """The answer to one of our requests, matched by Hop-by-Hop id."""

    message: Message


@attrs.frozen
class RequestFailed:
    """One of our requests will get no answer (connection closed or DPR)."""

    hop_by_hop: int
    reason: str


@attrs.frozen
class ErrorAnswered:
    """The peer layer answered a request itself with an error (for logs/metrics)."""

    command_code: int
    result_code: int
    reason: str


@attrs.frozen
class DisconnectRequested:
    """The peer sent DPR (we answered DPA); it will close the transport."""

    cause: int | None


@attrs.frozen
class WatchdogChanged:
    """RFC 3539 watchdog state changed: OKAY, SUSPECT, DOWN, REOPEN."""

    state: str


@attrs.frozen
class ConnectionClosed:
    """The connection is finished: the owner closes the transport now."""

    reason: str


Event = (PeerOpened | RequestReceived | AnswerReceived | RequestFailed | ErrorAnswered
         | DisconnectRequested | WatchdogChanged | ConnectionClosed)
