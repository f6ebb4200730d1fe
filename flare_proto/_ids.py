"""Identifier and timestamp source, injectable so the core never reads a clock or ``random``.

The default follows the original's shape (reference §11.3): ``"{unix_millis}-{counter:016x}"``
with separate counters for message ids and connection ids. Unix time is derived from the
caller's monotonic ``now`` plus a fixed ``wall_offset`` (``time.time() - time.monotonic()``,
measured once by the driver), so tests with a fake clock get reproducible ids.
"""

from __future__ import annotations

from typing import Protocol


class IdSource(Protocol):
    """Where a connection gets message ids, connection ids and frame timestamps."""

    def message_id(self, now: float) -> str:
        """A fresh ``Frame.message_id``."""
        ...

    def connection_id(self, now: float) -> str:
        """A fresh server-side connection id."""
        ...

    def timestamp_ms(self, now: float) -> int:
        """``Frame.timestamp``: Unix time in milliseconds."""
        ...


class SequentialIds:
    """The default :class:`IdSource`: ``"{unix_millis}-{counter:016x}"`` ids.

    ``wall_offset`` is added to ``now`` to get Unix seconds. Share one instance between all
    connections of a process so ids stay unique (the counters are per instance).
    ``first`` is the first message counter: a driver passes a random one (the core draws
    no randomness), so two processes started in the same millisecond do not produce the
    same ids, which a server's :class:`~flare_proto.RecentSends` would take for one SEND.
    """

    __slots__ = ("_connections", "_messages", "wall_offset")

    def __init__(self, wall_offset: float = 0.0, *, first: int = 0) -> None:
        if not 0 <= first < 1 << 64:
            raise ValueError("first must fit the id's 16 hex digits")
        self.wall_offset = wall_offset
        self._messages = first
        self._connections = 0

    def timestamp_ms(self, now: float) -> int:
        """Unix milliseconds for the caller's monotonic ``now``."""
        return int((now + self.wall_offset) * 1000)

    def message_id(self, now: float) -> str:
        """Next message id."""
        n = self._messages
        self._messages = n + 1
        return f"{self.timestamp_ms(now)}-{n:016x}"

    def connection_id(self, now: float) -> str:
        """Next connection id."""
        n = self._connections
        self._connections = n + 1
        return f"{self.timestamp_ms(now)}-{n:016x}"
