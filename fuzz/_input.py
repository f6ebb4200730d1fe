"""A byte reader that turns a fuzzer's input into a harness's decisions.

Harnesses read their configuration and their operations from the input itself, so one
``bytes`` value is a complete, replayable test case and libFuzzer's mutations (which know
nothing about the structure) still move through the whole space. Reading past the end never
fails: :meth:`Reader.byte` gives 0 and :meth:`Reader.take` gives what is left, so every input
is a valid program.
"""

from __future__ import annotations

__all__ = ["Reader"]


class Reader:
    """Consume ``data`` from the front, a byte or a slice at a time."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not consumed yet."""
        return len(self._data) - self._pos

    def byte(self) -> int:
        """The next byte, or 0 when the input is exhausted."""
        pos = self._pos
        if pos >= len(self._data):
            return 0
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        """The next two bytes as a big-endian number (missing bytes read as 0)."""
        return (self.byte() << 8) | self.byte()

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes, fewer if the input ends first."""
        pos = self._pos
        chunk = self._data[pos : pos + size]
        self._pos = pos + len(chunk)
        return chunk

    def rest(self) -> bytes:
        """Everything not consumed yet."""
        return self.take(self.remaining)
