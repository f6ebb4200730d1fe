"""What the driver loop needs from a transport: messages or stream bytes in, bytes out.

A WebSocket transport yields whole messages (``Framing.MESSAGE``); a QUIC transport yields
bytes of its one bidirectional stream (``Framing.STREAM``). Everything transport-specific
(wsproto events, aioquic timers and datagrams, TLS) stays behind this protocol, so the
loop in :mod:`flare_drivers._loop` is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flare_proto import Framing


@dataclass(frozen=True, slots=True)
class TransportClosed:
    """The peer closed the transport; ``number`` is its close code, if it gave one.
    ``half``: the peer only ended its sending side (a QUIC FIN): we can still write, so
    the core's last frame (an ERROR for a stream cut inside a frame) still goes out."""

    number: int | None
    reason: str
    half: bool = False


class Transport(Protocol):
    """A connected transport, as seen by :class:`~flare_drivers._loop.ConnectionDriver`.

    A transport may also offer ``receive_nowait() -> bytes | TransportClosed | None``:
    what :meth:`receive` would return at once, or ``None`` when that would wait. The driver
    then takes a whole read's messages in one burst instead of one wait per message
    (:class:`~flare_drivers.WebSocketTransport` does). It is optional, so it is not a
    member of this protocol.
    """

    framing: Framing
    """``MESSAGE``: :meth:`receive` returns whole frames; ``STREAM``: arbitrary chunks."""

    remote: str
    """The peer's address as ``host:port`` (for logs)."""

    async def receive(self) -> bytes | TransportClosed:
        """The next message or chunk. Must be safe to cancel (no data lost when a timer
        interrupts it). Returns :class:`TransportClosed` once the peer has gone; calling
        again after that returns it again."""
        ...

    async def send(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` in order: with ``MESSAGE`` framing each chunk is one message;
        with ``STREAM`` they are concatenated. Implementations coalesce into as few
        socket writes as they can. Raises ``anyio.BrokenResourceError`` if the peer went."""
        ...

    async def aclose(self, number: int | None, reason: str) -> None:
        """Close with ``number`` (WebSocket close code, QUIC application error code);
        ``None`` means a normal close. Idempotent, never raises."""
        ...
