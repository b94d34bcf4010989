"""Result codes and the errors the codec reports (RFC 6733 §7, RFC 8506 §9).

Invariants:
- Framing problems (the stream can no longer be trusted) raise `FramingError`,
  carrying the Result-Code a peer would be told; the connection that produced
  them is closed, nothing else is affected.
- Problems inside a well-framed message never raise: they are collected as
  `AvpError` values (Result-Code plus the Failed-AVP content) and answered.
"""

from __future__ import annotations

import enum

import attrs


class ResultCode(enum.IntEnum):
    """Result-Code (268) values of RFC 6733 §7.1 and RFC 8506 §9."""

    DIAMETER_MULTI_ROUND_AUTH = 1001
    DIAMETER_SUCCESS = 2001
    DIAMETER_LIMITED_SUCCESS = 2002
    DIAMETER_COMMAND_UNSUPPORTED = 3001
    DIAMETER_UNABLE_TO_DELIVER = 3002
    DIAMETER_REALM_NOT_SERVED = 3003
    DIAMETER_TOO_BUSY = 3004
    DIAMETER_LOOP_DETECTED = 3005
    DIAMETER_REDIRECT_INDICATION = 3006
    DIAMETER_APPLICATION_UNSUPPORTED = 3007
    DIAMETER_INVALID_HDR_BITS = 3008
    DIAMETER_INVALID_AVP_BITS = 3009
    DIAMETER_UNKNOWN_PEER = 3010
    DIAMETER_AUTHENTICATION_REJECTED = 4001
    DIAMETER_OUT_OF_SPACE = 4002
    ELECTION_LOST = 4003
    DIAMETER_END_USER_SERVICE_DENIED = 4010
    DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE = 4011
    DIAMETER_CREDIT_LIMIT_REACHED = 4012
    DIAMETER_AVP_UNSUPPORTED = 5001
    DIAMETER_UNKNOWN_SESSION_ID = 5002
    DIAMETER_AUTHORIZATION_REJECTED = 5003
    DIAMETER_INVALID_AVP_VALUE = 5004
    DIAMETER_MISSING_AVP = 5005
    DIAMETER_RESOURCES_EXCEEDED = 5006
    DIAMETER_CONTRADICTING_AVPS = 5007
    DIAMETER_AVP_NOT_ALLOWED = 5008
    DIAMETER_AVP_OCCURS_TOO_MANY_TIMES = 5009
    DIAMETER_NO_COMMON_APPLICATION = 5010
    DIAMETER_UNSUPPORTED_VERSION = 5011
    DIAMETER_UNABLE_TO_COMPLY = 5012
    DIAMETER_INVALID_BIT_IN_HEADER = 5013
    DIAMETER_INVALID_AVP_LENGTH = 5014
    DIAMETER_INVALID_MESSAGE_LENGTH = 5015
    DIAMETER_INVALID_AVP_BIT_COMBO = 5016
    DIAMETER_NO_COMMON_SECURITY = 5017
    DIAMETER_USER_UNKNOWN = 5030
    DIAMETER_RATING_FAILED = 5031


def is_protocol_error(code: int) -> bool:
    """3xxx answers are protocol errors and MUST carry the E bit (RFC 6733 §7.1.3)."""
    return 3000 <= code < 4000


class FramingError(Exception):
    """The byte stream broke the header rules; the connection must be closed.

    `header` holds the 20 header octets when they were readable, so that an
    answer can still be addressed to the request (hop-by-hop, end-to-end).
    """

    def __init__(self, result_code: int, reason: str, header: bytes | None = None):
        super().__init__(f"{result_code}: {reason}")
        self.result_code = result_code
        self.reason = reason
        self.header = header


class DictionaryError(Exception):
    """A dictionary file is inconsistent; the message names file and line."""


@attrs.frozen
class AvpError:
    """One problem found in a received message, as it will be answered.

    `failed_avp` is the encoded AVP (header and data) to place inside Failed-AVP:
    the offending AVP, or for a missing AVP an example with zero-filled data.
    """

    result_code: int
    failed_avp: bytes | None
    message: str
