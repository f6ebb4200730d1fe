"""The server hub: one connection table, device registry and application for all listeners.

Theory of operation: each listener hands every accepted transport to
:meth:`Hub.handle_transport`, which builds a :class:`~flare_proto.ServerConnection`, runs it
with the shared :class:`~flare_drivers._loop.ConnectionDriver` and turns its events into
application calls: ``ConnectRequested`` → the async authenticator → :func:`flare_proto.admit`
(device conflicts on the authenticated id, KICKED, CONNECT_ACK) → ``on_connect``; each
``FrameReceived`` → the router, then the ACK for a SEND once its handler returned (DESIGN
§6); the end → ``on_disconnect``. Sends from any task only touch a core and flush its
driver's bounded queue, so a slow peer never blocks anyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.abc

from flare_proto import (
    AllowAll,
    CloseCode,
    CommandKind,
    Compression,
    ConnectionClosed,
    ConnectRequest,
    ConnectRequested,
    DeviceInfo,
    DeviceRegistry,
    DeviceStrategy,
    Event,
    Format,
    Frame,
    FrameReceived,
    FrameRejected,
    RecentSends,
    ServerConfig,
    ServerConnection,
    ServerState,
    admit,
    message_frame,
)
from flare_proto._dedup import Sender
from flare_proto._frames import SEND, MetadataIn, ack_id

from ._clock import now, process_ids
from ._loop import ConnectionDriver
from ._router import Router
from ._transport import Transport

log = logging.getLogger("flare.server")

_OPEN = ServerState.OPEN



@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """Authenticator verdict: let the connection in as ``user_id``."""

    user_id: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Authenticator verdict: refuse with ERROR ``auth_failed`` and ``reason``."""

    reason: str = "authentication failed"


Authenticator = Callable[[ConnectRequest], Awaitable[Accept | Reject]]
"""``async def authenticate(request) -> Accept | Reject``; ``request.token`` holds the token."""


class Connection:
    """A live server connection as the application sees it (handlers get one of these)."""

    def __init__(self, hub: Hub, core: ServerConnection, transport: Transport) -> None:
        self.hub = hub
        self.core = core
        self.transport = transport
        self.driver = ConnectionDriver(core, transport, self._on_event, max_queue=hub.max_queue)
        self.metadata: Mapping[str, str] = {}
        """Metadata the authenticator attached (``Accept.metadata``)."""
        self.announced = False
        """True once ``on_connect`` hooks ran (then ``on_disconnect`` hooks will too)."""
        self.sender: Sender | None = None
        """Who sends, once accepted, for the hub's resend de-duplication (``None``:
        anonymous, or not accepted yet)."""
        self.siblings: Sequence[Connection] = ()
        """The hub's connections with the same :attr:`sender`, this one included (shared
        by them; empty without a sender)."""
        self.handling: int | None = None
        """The fingerprint of the SEND whose handler runs now (one at a time: frames are
        handled in order)."""
        self.tasks: anyio.abc.TaskGroup | None = None
        self.lock: anyio.Lock | None = None
        """Held while an authenticator's verdict and ``on_connect`` run in another task:
        frames wait for them. Made only then: without an authenticator both run in the
        read loop before the next frame, and an idle connection saves the lock's memory."""

    @property
    def id(self) -> str:
        """The server-side connection id."""
        return self.core.connection_id

    @property
    def user_id(self) -> str | None:
        """The authenticated user id (the claimed one when auth is off)."""
        return self.core.user_id

    @property
    def device(self) -> DeviceInfo | None:
        """The device announced in CONNECT."""
        request = self.core.request
        return None if request is None else request.device

    @property
    def accepted(self) -> bool:
        """True once CONNECT_ACK went out and until the connection ends."""
        return self.core.state is ServerState.OPEN

    def send_message(self, payload: bytes, *, metadata: MetadataIn | None = None) -> str:
        """Send a SEND to this client; returns its message id. Never blocks."""
        ident = self.core.send_message(payload, now(), metadata=metadata)
        self.driver.flush()
        return ident

    def send_frame(self, frame: Frame) -> None:
        """Send any frame in this connection's negotiated encoding. Never blocks."""
        self.core.send_frame(frame, now())
        self.driver.flush()

    def close(self, code: CloseCode = CloseCode.SERVER_SHUTDOWN, reason: str = "") -> None:
        """Close with ``code`` (a CLOSE frame, then the transport)."""
        if not self.core.closed:
            self.core.close(now(), code, reason or code.code)
            self.driver.flush()

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id!r} {self.transport.remote}>"

    async def _on_event(self, event: Event) -> None:
        hub = self.hub
        if isinstance(event, FrameReceived):
            lock = self.lock
            if lock is not None and lock.locked():  # the verdict and on_connect hooks run
                async with lock:
                    pass
            await hub._on_frame(self, event.frame, event.kind)
        elif isinstance(event, ConnectRequested):
            await hub._on_connect_requested(self, event.request)
        elif isinstance(event, FrameRejected):
            log.debug("%s: dropped undecodable frame: %s", self, event.reason)
        elif isinstance(event, ConnectionClosed):
            log.debug("%s: closed (%s) %s", self, event.code, event.reason)


class _CoreView(Mapping[str, ServerConnection]):
    """The connection table seen as id → core, for :func:`flare_proto.admit`."""

    def __init__(self, table: dict[str, Connection]) -> None:
        self._table = table

    def __getitem__(self, key: str) -> ServerConnection:
        return self._table[key].core

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


ConnectionHook = Callable[[Connection], Awaitable[None]]


class Hub:
    """Connection table, device registry, authenticator and handlers shared by every
    listener. Register handlers with :attr:`router`, :meth:`on_connect` and
    :meth:`on_disconnect`; run listeners with :func:`flare_drivers.serve`.

    ``dedup``: remember handled SENDs (``True``: a default
    :class:`~flare_proto.RecentSends`; or your own; ``False``: off), so a client's resend
    of a SEND whose ACK was lost is ACKed, not handled twice (docs/decisions.md,
    "Delivery")."""

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        authenticator: Authenticator | None = None,
        strategy: DeviceStrategy | None = None,
        max_connections: int = 10_000,
        max_queue: int = 1024,
        hook_timeout: float = 5.0,
        dedup: bool | RecentSends = True,
        resend_wait: float = 10.0,
    ) -> None:
        self.config = config or ServerConfig()
        self.authenticator = authenticator
        self.registry = DeviceRegistry(strategy or AllowAll())
        self.max_connections = max_connections
        self.max_queue = max_queue
        self.hook_timeout = hook_timeout
        """Bound on the ``on_disconnect`` hooks of one connection (they run shielded)."""
        self.recent_sends: RecentSends | None = (
            (RecentSends() if dedup else None) if isinstance(dedup, bool) else dedup
        )
        """SENDs handled lately (``dedup``): a resend of one is ACKed, not handled again."""
        self._senders: dict[Sender, list[Connection]] = {}  # Connection.siblings
        self._waits: dict[int, anyio.Event] = {}  # resends waiting for a handler, by key
        self.resend_wait = resend_wait
        """How long a resend waits for the same SEND's handler running on another
        connection before it is handled again (the client's ``ack_timeout`` by default)."""
        self.router: Router[Connection] = Router()
        self.connections: dict[str, Connection] = {}
        """Every live connection by id, accepted or not."""
        self._cores = _CoreView(self.connections)
        self._on_connect: list[ConnectionHook] = []
        self._on_disconnect: list[ConnectionHook] = []
        self._closing = False
        self._drained = anyio.Event()
        # Connections that left the table but whose on_disconnect hooks still run:
        # shutdown() waits for them too.
        self._in_hooks = 0

    # -- application registration --------------------------------------------------------

    def on_connect(self, hook: ConnectionHook) -> ConnectionHook:
        """Decorator: ``async def hook(conn)`` after a connection was accepted."""
        self._on_connect.append(hook)
        return hook

    def on_disconnect(self, hook: ConnectionHook) -> ConnectionHook:
        """Decorator: ``async def hook(conn)`` after an accepted connection ended
        (``conn.core.close_code`` says why)."""
        self._on_disconnect.append(hook)
        return hook

    # -- sending ---------------------------------------------------------------------------

    def accepted(self) -> Iterator[Connection]:
        """The accepted connections (a snapshot)."""
        return iter([c for c in self.connections.values() if c.accepted])

    def send_to_user(self, user_id: str, frame: Frame) -> int:
        """Send ``frame`` to every accepted connection of ``user_id``; returns how many."""
        # The device registry already indexes accepted connections by user.
        found = (self.connections.get(ident) for ident, _ in self.registry.devices_of(user_id))
        return self.broadcast(frame, [c for c in found if c is not None])

    def broadcast(
        self, frame: Frame, targets: list[Connection] | None = None, *, exclude: str | None = None
    ) -> int:
        """Send ``frame`` to ``targets`` (default: every accepted connection), serialized
        and compressed once per distinct encoding (DESIGN §6). Returns how many got it."""
        # The hot loop of a broadcast (benchmarks/p_broadcast.py): per connection one state
        # test, one dict lookup, the core's queue and the driver's flush. Every connection
        # of an encoding gets the same bytes object, which the WebSocket transport frames
        # once for all of them.
        encoded: dict[tuple[Format, Compression], bytes] = {}
        count = 0
        for conn in list(self.connections.values()) if targets is None else targets:
            core = conn.core
            if core.state is not _OPEN or (exclude is not None and conn.id == exclude):
                continue
            key = (core.format, core.compression)
            data = encoded.get(key)
            if data is None:
                data = encoded[key] = core.encode(frame)
            core.send_encoded(data)
            conn.driver.flush()
            count += 1
        return count

    def kick(self, connection_id: str, reason: str = "kicked by the server") -> bool:
        """Send KICKED to a connection and close it; ``False`` if it is not live."""
        conn = self.connections.get(connection_id)
        if conn is None or conn.core.closed:
            return False
        conn.core.kick(now(), message=reason, metadata={"reason": "server_kick"})
        conn.driver.flush()
        return True

    # -- connection life cycle ----------------------------------------------------------------

    async def handle_transport(self, transport: Transport) -> None:
        """Serve one accepted transport until it ends (listeners call this)."""
        core = ServerConnection(
            self.config, now=now(), ids=process_ids(), framing=transport.framing
        )
        conn = Connection(self, core, transport)
        if self._closing:
            core.close(now(), CloseCode.SERVER_SHUTDOWN, "server shutting down")
        elif len(self.connections) >= self.max_connections:
            core.close(now(), CloseCode.SERVER_FULL, "server full")
        else:
            self.connections[conn.id] = conn
        try:
            if self.authenticator is None:
                # Nothing runs beside the read loop: no task group (~1.3 KiB per idle
                # connection with its cancel scope).
                await conn.driver.run()
            else:
                async with anyio.create_task_group() as tg:
                    conn.tasks = tg  # the authenticator runs here, beside the read loop
                    await conn.driver.run()
                    tg.cancel_scope.cancel()
        finally:
            self.connections.pop(conn.id, None)
            self.registry.remove(conn.id)
            if conn.sender is not None:
                siblings = self._senders[conn.sender]
                siblings.remove(conn)
                if not siblings:
                    del self._senders[conn.sender]
            if conn.announced and self._on_disconnect:
                # Shielded and bounded: shutdown and cancellation must not skip the hooks.
                self._in_hooks += 1
                try:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(self.hook_timeout):
                        for hook in self._on_disconnect:
                            try:
                                await hook(conn)
                            except Exception:
                                log.exception("on_disconnect hook failed for %s", conn)
                finally:
                    self._in_hooks -= 1
            if self._closing and not self.connections and not self._in_hooks:
                self._drained.set()

    async def _on_connect_requested(self, conn: Connection, request: ConnectRequest) -> None:
        if self.authenticator is None:
            await self._verdict(conn, Accept(user_id=request.user_id))
        else:
            # Not in the read loop: meanwhile the core keeps reading (held frames, a repeated
            # CONNECT, pings, the peer leaving) and kick/shutdown can still reach it.
            conn.lock = anyio.Lock()
            if conn.tasks is None:  # the authenticator was set after this connection began
                await self._authenticate(conn, request)
            else:
                conn.tasks.start_soon(self._authenticate, conn, request)

    async def _authenticate(self, conn: Connection, request: ConnectRequest) -> None:
        assert self.authenticator is not None
        deadline = conn.core.next_deadline()
        verdict: Accept | Reject | None = None
        with anyio.move_on_after(0.0 if deadline is None else max(0.0, deadline - now())):
            try:
                verdict = await self.authenticator(request)
            except Exception:
                log.exception("authenticator failed for %s", conn)
                verdict = Reject(reason="authentication error")
        assert conn.lock is not None  # made by _on_connect_requested
        async with conn.lock:
            await self._verdict(conn, verdict)
        conn.driver.wake()  # deliver the frames held until the verdict

    async def _verdict(self, conn: Connection, verdict: Accept | Reject | None) -> None:
        core = conn.core
        if core.closed:
            return
        if verdict is None:  # no verdict within auth_timeout: the core closes it
            core.handle_timer(now())
            conn.driver.flush()
            return
        if isinstance(verdict, Reject):
            core.reject(now(), verdict.reason)
            conn.driver.flush()
            return
        conn.metadata = dict(verdict.metadata)
        for old in admit(core, self.registry, self._cores, now(), user_id=verdict.user_id):
            kicked = self.connections.get(old.connection_id)
            if kicked is not None:
                kicked.driver.flush()
        device = conn.device
        sender = RecentSends.sender(core.user_id, device.device_id if device else None)
        if sender is not None and self.recent_sends is not None:
            conn.sender = sender
            conn.siblings = siblings = self._senders.setdefault(sender, [])
            siblings.append(conn)
        conn.driver.flush()
        conn.announced = True
        for hook in self._on_connect:
            try:
                await hook(conn)
            except Exception:
                log.exception("on_connect hook failed for %s", conn)

    async def _on_frame(self, conn: Connection, frame: Frame, kind: CommandKind) -> None:
        recent = self.recent_sends
        # conn.sender is set only with de-duplication on (_verdict), so anonymous senders
        # and a hub without it pay one attribute test here.
        if conn.sender is not None and kind is CommandKind.SEND and recent is not None:
            message = frame.command.message
            key = hash((conn.sender, message.message_id or frame.message_id, message.payload))
            if (key in recent or len(conn.siblings) > 1) and await self._settled(conn, key):
                # A resend of a SEND the application already has (its ACK was lost): ACK
                # it again, do not deliver it twice.
                self._ack(conn, frame)
                return
            conn.handling = key
            try:
                await self.router.dispatch(conn, frame, kind)
            except Exception:
                # No ACK: the client's send fails after ack_timeout instead of pretending.
                log.exception("handler failed for %s frame from %s", kind.value, conn)
                return
            finally:
                conn.handling = None
                if self._waits:
                    waiting = self._waits.pop(key, None)
                    if waiting is not None:
                        waiting.set()
            recent.add(key)
            self._ack(conn, frame)
            return
        try:
            await self.router.dispatch(conn, frame, kind)
        except Exception:
            log.exception("handler failed for %s frame from %s", kind.value, conn)
            return
        if kind is CommandKind.SEND and not conn.core.closed:
            conn.core.send_ack(ack_id(frame), now())  # _ack, inlined: the hot path

    async def _settled(self, conn: Connection, key: int) -> bool:
        """Whether the SEND ``key`` was handled, once no other connection of its sender
        handles it any more: a resend can arrive while the first connection's handler is
        still at work (that connection is not dead yet); a failed handler leaves it
        unhandled. The wait is bounded (``resend_wait``): past it the resend is handled
        again, as it would be without de-duplication, rather than holding this connection
        behind another's handler."""
        with anyio.move_on_after(self.resend_wait):
            while any(c.handling == key for c in conn.siblings if c is not conn):
                waiting = self._waits.get(key)
                if waiting is None:
                    waiting = self._waits[key] = anyio.Event()
                await waiting.wait()
        assert self.recent_sends is not None
        return key in self.recent_sends

    @staticmethod
    def _ack(conn: Connection, frame: Frame) -> None:
        if not conn.core.closed:
            # Not flushed here: this runs in the connection's reading task, which writes
            # the ACKs of everything one read brought in one write (_loop.py).
            conn.core.send_ack(ack_id(frame), now())

    async def shutdown(self, grace: float = 5.0) -> None:
        """Graceful drain: CLOSE ``server_shutdown`` to every connection, then wait up to
        ``grace`` seconds for them to end. New transports are refused meanwhile."""
        self._closing = True
        for conn in list(self.connections.values()):
            conn.close(CloseCode.SERVER_SHUTDOWN, "server shutting down")
        if self.connections or self._in_hooks:
            with anyio.move_on_after(grace):
                await self._drained.wait()


def chat_message(payload: bytes, sender: Connection) -> Frame:
    """The SEND a chat room delivers to the others: new id, same payload, ``from``."""
    t = now()
    ids = process_ids()
    return message_frame(
        SEND,
        message_id=ids.message_id(t),
        timestamp=ids.timestamp_ms(t),
        payload=payload,
        metadata={"from": sender.user_id or sender.id},
    )


def install_chat_room(hub: Hub) -> None:
    """The ``flare serve`` application (DESIGN §7): every SEND goes to all other accepted
    connections as a new SEND with metadata ``from``; a CustomCommand ``echo`` returns to
    its sender unchanged."""

    @hub.router.on(CommandKind.SEND)
    async def relay(conn: Connection, frame: Frame) -> None:
        hub.broadcast(chat_message(frame.command.message.payload, conn), exclude=conn.id)

    @hub.router.on_custom("echo")
    async def echo(conn: Connection, frame: Frame) -> None:
        conn.send_frame(frame)
