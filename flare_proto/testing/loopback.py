"""A client core wired to a server core in memory, on a fake clock.

The test double for everything above the transport: what one side sends is fed to the
other in order, a close is delivered after the bytes before it (as a transport would),
and :meth:`Loopback.advance` steps the fake clock through every deadline on the way, so
timer behaviour is exact and tests never sleep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._client import ClientConnection
from .._config import ClientConfig, ServerConfig
from .._connection import ConnectionBase, Framing
from .._events import ConnectRequested, Event
from .._ids import SequentialIds
from .._pb.frame_pb2 import Frame
from .._server import ServerConnection

_NORMAL_CLOSE = 1000  # WebSocket "normal closure", used when a close carries no flare code


@dataclass
class _Side:
    conn: ConnectionBase
    events: list[Event] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    transport_closed: bool = False


class Loopback:
    """One :class:`ClientConnection` and one :class:`ServerConnection` back to back.

    ``auto_accept`` answers every :class:`ConnectRequested` with ``accept`` using the
    claimed user id, like a server with authentication disabled. Pass one ``ids`` to
    several pairs that stand for connections of one server, so their ids stay unique.
    ``resend`` is what an earlier connection left unacknowledged
    (:meth:`ClientConnection.pending_sends`): the client sends it again after the handshake.
    """

    def __init__(
        self,
        client_config: ClientConfig | None = None,
        server_config: ServerConfig | None = None,
        *,
        framing: Framing = Framing.MESSAGE,
        now: float = 0.0,
        auto_accept: bool = True,
        ids: SequentialIds | None = None,
        resend: list[Frame] | None = None,
    ) -> None:
        self.now = now
        self.ids = SequentialIds(wall_offset=1_730_000_000.0) if ids is None else ids
        self.client = ClientConnection(
            client_config or ClientConfig(), ids=self.ids, framing=framing, resend=resend or ()
        )
        self.server = ServerConnection(
            server_config or ServerConfig(), now=now, ids=self.ids, framing=framing
        )
        self.framing = framing
        self.auto_accept = auto_accept
        self._client = _Side(self.client)
        self._server = _Side(self.server)

    @property
    def client_events(self) -> list[Event]:
        """Every event the client produced so far, in order."""
        return self._client.events

    @property
    def server_events(self) -> list[Event]:
        """Every event the server produced so far, in order."""
        return self._server.events

    @property
    def client_sent(self) -> list[bytes]:
        """Every chunk the client wrote, in order."""
        return self._client.sent

    @property
    def server_sent(self) -> list[bytes]:
        """Every chunk the server wrote, in order."""
        return self._server.sent

    def connect(self) -> None:
        """Client sends CONNECT, then :meth:`pump`."""
        self.client.connect(self.now)
        self.pump()

    def inject(self, data: bytes, *, to_server: bool = True) -> None:
        """Deliver raw bytes (one transport message, or stream bytes) to one side."""
        target = self.server if to_server else self.client
        if self.framing is Framing.STREAM:
            target.receive_data(data, self.now)
        else:
            target.receive_message(data, self.now)
        self.pump()

    def pump(self) -> None:
        """Move bytes and closes between the two sides until nothing moves."""
        moved = True
        while moved:
            moved = self._collect(self._server)
            moved = self._collect(self._client) or moved
            moved = self._transfer(self._client, self._server) or moved
            moved = self._transfer(self._server, self._client) or moved

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward, firing every deadline met on the way in order."""
        target = self.now + seconds
        while True:
            deadlines = [
                d
                for d in (self.client.next_deadline(), self.server.next_deadline())
                if d is not None
            ]
            if not deadlines or min(deadlines) > target:
                break
            self.now = max(self.now, min(deadlines))
            self.client.handle_timer(self.now)
            self.server.handle_timer(self.now)
            self.pump()
        self.now = target

    def _collect(self, side: _Side) -> bool:
        events = side.conn.events_received()
        side.events.extend(events)
        if self.auto_accept and side.conn is self.server:
            for event in events:
                if isinstance(event, ConnectRequested):
                    self.server.accept(self.now, user_id=event.request.user_id)
        return bool(events)

    def _transfer(self, source: _Side, target: _Side) -> bool:
        chunks = source.conn.data_to_send()
        if source.transport_closed:
            return False
        receiver = target.conn
        for chunk in chunks:
            source.sent.append(chunk)
            if self.framing is Framing.STREAM:
                receiver.receive_data(chunk, self.now)
            else:
                receiver.receive_message(chunk, self.now)
        if source.conn.closed:
            source.transport_closed = True
            code = source.conn.close_code
            receiver.receive_close(
                _NORMAL_CLOSE if code is None else code.number, source.conn.close_reason, self.now
            )
            return True
        return bool(chunks)
