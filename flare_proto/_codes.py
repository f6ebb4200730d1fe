"""Close codes: the ``code`` metadata of ERROR/CLOSE frames and the transport close numbers.

DESIGN.md §4 is the table. The number is the WebSocket close code and the QUIC application
error code; the name travels in ERROR/CLOSE metadata ``code`` and as the WebSocket reason.
"""

from __future__ import annotations

import enum


class CloseCode(enum.Enum):
    """Why a connection ended, with its close number and whether a client may reconnect."""

    AUTH_FAILED = ("auth_failed", 4001, False)
    AUTH_TIMEOUT = ("auth_timeout", 4002, True)
    PROTOCOL_ERROR = ("protocol_error", 4003, False)
    FRAME_TOO_LARGE = ("frame_too_large", 4004, False)
    UNSUPPORTED_FORMAT = ("unsupported_format", 4005, False)
    UNSUPPORTED_COMPRESSION = ("unsupported_compression", 4006, False)
    HEARTBEAT_TIMEOUT = ("heartbeat_timeout", 4007, True)
    SLOW_CONSUMER = ("slow_consumer", 4008, True)
    SERVER_FULL = ("server_full", 4009, True)
    SERVER_SHUTDOWN = ("server_shutdown", 4010, True)
    KICKED = ("kicked", 4011, False)

    def __init__(self, code: str, number: int, reconnect: bool) -> None:
        self.code = code
        self.number = number
        self.reconnect = reconnect

    @classmethod
    def from_code(cls, code: str) -> CloseCode | None:
        """Look up by wire name (``"auth_failed"``); ``None`` if not in the table."""
        return _BY_CODE.get(code)

    @classmethod
    def from_number(cls, number: int) -> CloseCode | None:
        """Look up by close number (4001-4011); ``None`` if not in the table."""
        return _BY_NUMBER.get(number)


_BY_CODE = {c.code: c for c in CloseCode}
_BY_NUMBER = {c.number: c for c in CloseCode}
