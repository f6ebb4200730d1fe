"""Length-prefix framing for stream transports (QUIC), reference §4.2 and DESIGN.md §2."""

from __future__ import annotations

from typing import ClassVar

from ._errors import FrameTooLarge, LocalProtocolError

__all__ = ["LengthPrefixFramer"]

_MAX_PREFIXABLE = 0xFFFF_FFFF


class LengthPrefixFramer:
    """Split a byte stream into frames, each behind a 4-byte big-endian length.

    On a QUIC stream every frame travels as ``length (u32, big-endian) || payload``. Feed
    whatever the transport delivered, in any chunking, to :meth:`receive`; it returns the
    payload of every frame completed by that data, in order, and keeps the rest buffered.

    * A length above ``max_frame`` raises :class:`FrameTooLarge` as soon as the 4 prefix
      bytes are in, before any payload is buffered (exactly ``max_frame`` is allowed). The
      stream is then broken: frames completed earlier in the same call are dropped with it
      (the connection is closing anyway) and every later :meth:`receive` raises again.
    * A length of 0 is the end-of-stream marker (the original treats it as the peer
      closing, reference §12.2): :attr:`ended` becomes ``True``, the frames before it are
      returned, and everything after it, in that call or later ones, is ignored.

    Buffering is a ``bytearray`` consumed from the front, so a frame trickling in one byte
    at a time costs O(1) per call, not a copy of everything buffered so far.

    >>> framer = LengthPrefixFramer(max_frame=1024)
    >>> framer.receive(LengthPrefixFramer.frame(b"abc") + b"\\x00\\x00")
    [b'abc']
    >>> framer.buffered
    2
    """

    __slots__ = ("_buffer", "_error", "_max_frame", "ended")

    END_OF_STREAM: ClassVar[bytes] = b"\x00\x00\x00\x00"
    """The 4 bytes that end a stream (a zero length)."""

    def __init__(self, max_frame: int) -> None:
        if max_frame <= 0:
            raise LocalProtocolError(f"max_frame must be > 0, got {max_frame!r}")
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._error: str | None = None
        self.ended = False
        """``True`` once the end-of-stream marker (length 0) was received."""

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame (a partial prefix or payload)."""
        return len(self._buffer)

    @staticmethod
    def frame(payload: bytes) -> bytes:
        """``payload`` behind its 4-byte big-endian length, ready to write to the stream.

        Raises:
            LocalProtocolError: ``payload`` is empty (that would be the end-of-stream
                marker) or longer than 2**32 - 1 bytes.
        """
        size = len(payload)
        if not 0 < size <= _MAX_PREFIXABLE:
            raise LocalProtocolError(f"cannot length-prefix a payload of {size} bytes")
        return size.to_bytes(4, "big") + payload

    def receive(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return the payload of every frame they complete, in order.

        Raises:
            FrameTooLarge: a length prefix announces more than ``max_frame`` bytes (now or
                in an earlier call: the stream cannot be resynchronised).
        """
        if self._error is not None:
            raise FrameTooLarge(self._error)
        if self.ended:
            return []
        buffer = self._buffer
        if not buffer:
            # Common case: nothing pending, so slice frames straight out of `data` and copy
            # only an incomplete tail into the buffer.
            frames, pos = self._split(data)
            if pos < len(data) and not self.ended:
                buffer += data[pos:]
            return frames
        buffer += data
        # A memoryview slices the buffer without an intermediate bytearray copy; it must be
        # released before the buffer is resized.
        with memoryview(buffer) as view:
            frames, pos = self._split(view)
        if self.ended:
            buffer.clear()
        else:
            # Deleting a prefix of a bytearray moves its start, not the remaining bytes.
            del buffer[:pos]
        return frames

    def _split(self, source: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
        """Complete frames at the start of ``source`` and the offset after the last one."""
        frames: list[bytes] = []
        pos = 0
        end = len(source)
        max_frame = self._max_frame
        while end - pos >= 4:
            size = int.from_bytes(source[pos : pos + 4], "big")
            if size == 0:
                self.ended = True
                return frames, end
            if size > max_frame:
                self._error = f"length prefix of {size} bytes is above max_frame {max_frame}"
                self._buffer = bytearray()
                raise FrameTooLarge(self._error)
            stop = pos + 4 + size
            if stop > end:
                break
            frames.append(bytes(source[pos + 4 : stop]))
            pos = stop
        return frames, pos
