"""Exceptions. Peer violations never raise out of ``receive_*``; only local misuse does."""

from __future__ import annotations

from ._codes import CloseCode


class FlareError(Exception):
    """Base class of every flare exception."""


class LocalProtocolError(FlareError):
    """The caller used the API wrongly (e.g. sent before the handshake); state is unchanged."""


class DecodeError(FlareError):
    """Bytes that are not a valid frame. ``code`` is the close code the violation maps to."""

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class FrameTooLarge(DecodeError):
    """A frame, or a frame's decompressed form, is above the configured limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, CloseCode.FRAME_TOO_LARGE)
