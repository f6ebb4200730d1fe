"""The flare client: racing, reconnecting, SENDs that complete on their ACK (DESIGN §5).

Theory of operation: one background task owns the connection. It races the URLs
(:func:`~flare_drivers._race.race`), runs a fresh :class:`~flare_proto.ClientConnection`
on the winner with the shared driver loop, and when that connection ends either stops (a
terminal close code, or :meth:`Client.aclose`) or waits a full-jitter exponential backoff
and starts again, handing the unacknowledged SENDs to the next core, which resends them
with their original ids after CONNECT_ACK. Application calls only touch the current core
and flush its driver; ``send`` then waits for the ACK event of its id.
"""

from __future__ import annotations

import enum
import logging
import random
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

import anyio
import anyio.abc

from flare_proto import (
    AckTimedOut,
    ClientConfig,
    ClientConnection,
    CloseCode,
    Compression,
    ConnectionClosed,
    Event,
    Format,
    Frame,
    FrameReceived,
    HandshakeCompleted,
    Kicked,
    MessageAcked,
)
from flare_proto._frames import MetadataIn, ack_id

from ._clock import now, process_ids
from ._loop import ConnectionDriver
from ._race import BrokenTransports, race
from ._router import Router
from ._transport import Transport

log = logging.getLogger("flare.client")


class ConnectionState(enum.Enum):
    """What the client is doing."""

    CONNECTING = "connecting"
    NEGOTIATING = "negotiating"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged:
    """The client moved to ``state``; ``code`` says why a connection ended, ``url`` which
    transport is in use once connected, ``encoding`` the (format, compression) the
    handshake settled on (with ``connected`` only)."""

    state: ConnectionState
    code: CloseCode | None = None
    url: str | None = None
    encoding: tuple[Format, Compression] | None = None


ClientEvent = StateChanged | FrameReceived | Kicked
"""What iterating a :class:`Client` yields."""


class SendFailed(Exception):
    """A SEND was not acknowledged: ``reason`` is ``ack_timeout`` or the close code."""

    def __init__(self, message_id: str, reason: str) -> None:
        super().__init__(f"SEND {message_id} failed: {reason}")
        self.message_id = message_id
        self.reason = reason


class ClientClosed(Exception):
    """The client is closed (terminal close code or :meth:`Client.aclose`)."""


class _Waiter:
    __slots__ = ("deadline", "done", "error")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = anyio.Event()
        self.error: str | None = None


class Client:
    """A connection to a flare server over the first of ``urls`` that works.

    Use as ``async with Client([...]) as client:``. Iterate it for received frames,
    kicks and state changes, or register handlers on :attr:`router`.
    """

    def __init__(
        self,
        urls: Sequence[str],
        config: ClientConfig | None = None,
        *,
        race_stagger: float = 0.25,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        reconnect: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        quic_verify: bool | str = True,
        quic_alpn: Sequence[str] | None = None,
        connect_timeout: float = 10.0,
        max_events: int = 1024,
    ) -> None:
        if not urls:
            raise ValueError("Client needs at least one URL")
        self.urls = list(urls)
        self.config = config or ClientConfig()
        self.race_stagger = race_stagger
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.reconnect = reconnect
        self.ssl_context = ssl_context
        self.quic_verify = quic_verify
        self.quic_alpn = quic_alpn
        self.connect_timeout = connect_timeout
        self.router: Router[Client] = Router()
        self.state = ConnectionState.CONNECTING
        self.close_code: CloseCode | None = None
        """The code of the last connection's end (``None`` while none ended or normal)."""
        self.url: str | None = None
        """The URL of the current (or last) connection."""
        self.connect_error: ConnectionError | None = None
        """Why the latest connect attempt failed (every URL's error), ``None`` once one
        succeeds; :meth:`wait_connected` names it when the client gives up."""
        self.broken = BrokenTransports()
        self._core: ClientConnection | None = None
        self._driver: ConnectionDriver | None = None
        self._connected = anyio.Event()
        self._waiters: dict[str, _Waiter] = {}
        self._closing = False
        self._run_scope = anyio.CancelScope()
        self._in_handler = False
        self._dropping = False
        self._carry: list[Frame] = []
        self._session: AbstractAsyncContextManager[Client]
        self._finished = anyio.Event()
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[ClientEvent](
            max_events
        )

    # -- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._session = self._run_session()
        return await self._session.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._session.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _run_session(self) -> AsyncIterator[Client]:
        # The task group lives in one generator frame, so its scope always exits in order
        # even when closing is cancelled (a hand-written __aexit__ could skip it).
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run_scoped)
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.aclose()
                tg.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Close cleanly (CLOSE frame, then the transport) and stop reconnecting."""
        self._closing = True
        core, driver = self._core, self._driver
        if core is not None and driver is not None and not core.closed:
            core.close(now())
            driver.flush()
        else:  # racing or backing off: stop that (only the connection task, not the caller)
            self._run_scope.cancel()
        if self._in_handler:
            return  # called from one of our own handlers: the loop ends once it returns
        with anyio.move_on_after(5.0):
            await self._finished.wait()

    async def wait_connected(self) -> None:
        """Wait until a connection completed its handshake (raises :class:`ClientClosed`
        if the client closes first)."""
        while not self._connected.is_set():
            if self.state is ConnectionState.CLOSED:
                raise ClientClosed(self._closed_reason())
            await self._connected.wait()
        if self.state is ConnectionState.CLOSED:
            raise ClientClosed(self._closed_reason())

    def _closed_reason(self) -> str:
        if self.close_code is not None:
            return f"client closed: {self.close_code.code}"
        if self.connect_error is not None:
            return f"client closed: {self.connect_error}"
        return "client closed"

    @property
    def encoding(self) -> tuple[Format, Compression] | None:
        """The negotiated (format, compression) while connected, else ``None``."""
        core = self._core
        if core is None or self.state is not ConnectionState.CONNECTED:
            return None
        return core.format, core.compression

    @property
    def rtt(self) -> float | None:
        """The latest PING round-trip time of the current connection, in seconds."""
        return None if self._core is None else self._core.rtt

    # -- sending ---------------------------------------------------------------------------

    async def send(
        self, payload: bytes, *, metadata: MetadataIn | None = None, message_id: str | None = None
    ) -> str:
        """Send a SEND and wait for its ACK; returns its id. Raises :class:`SendFailed`
        ``ack_timeout`` after the call (or at a terminal close). Survives reconnects: an
        unacknowledged SEND is resent, with its id, on the next connection."""
        ident = await self.start_send(payload, metadata=metadata, message_id=message_id)
        await self.wait_ack(ident)
        return ident

    async def start_send(
        self, payload: bytes, *, metadata: MetadataIn | None = None, message_id: str | None = None
    ) -> str:
        """Queue a SEND once connected and return its id without waiting for the ACK
        (SENDs queued one after another go out in that order); then :meth:`wait_ack`."""
        core, driver = await self._open()
        ident = core.send_message(payload, now(), metadata=metadata, message_id=message_id)
        self._waiters[ident] = _Waiter(now() + self.config.ack_timeout)
        driver.flush()
        return ident

    async def wait_ack(self, message_id: str) -> None:
        """Wait for the ACK of a SEND from :meth:`start_send`; :class:`SendFailed` after
        its ``ack_timeout`` (then it is never resent) or at a terminal close."""
        waiter = self._waiters.get(message_id)
        if waiter is None:
            raise SendFailed(message_id, "not pending")
        with anyio.move_on_after(max(0.0, waiter.deadline - now())):
            await waiter.done.wait()
        if not waiter.done.is_set():
            # Also while disconnected: the core's own ACK timer only runs when connected.
            self._abandon(message_id)
            self._resolve(message_id, "ack_timeout")
        if waiter.error is not None:
            raise SendFailed(message_id, waiter.error)

    def _abandon(self, message_id: str) -> None:
        if self._core is not None:
            self._core.abandon(message_id)
        self._carry = [f for f in self._carry if ack_id(f) != message_id]

    async def send_data(self, payload: bytes, *, metadata: MetadataIn | None = None) -> str:
        """Send a DATA frame (fire and forget) once connected; returns its id."""
        core, driver = await self._open()
        ident = core.send_data(payload, now(), metadata=metadata)
        driver.flush()
        return ident

    async def send_custom(
        self, name: str, data: bytes = b"", *, metadata: MetadataIn | None = None
    ) -> str:
        """Send a CustomCommand once connected; returns its id."""
        core, driver = await self._open()
        ident = core.send_custom(name, data, now(), metadata=metadata)
        driver.flush()
        return ident

    def set_background(self, background: bool) -> None:
        """Use the background (longer) heartbeat interval, or back to the foreground one."""
        if self._core is not None and not self._core.closed:
            self._core.set_background(background, now())
            if self._driver is not None:
                self._driver.flush()

    async def _open(self) -> tuple[ClientConnection, ConnectionDriver]:
        while True:
            await self.wait_connected()
            core, driver = self._core, self._driver
            if core is not None and driver is not None and not core.closed:
                return core, driver
            await anyio.sleep(0.01)  # a connection just ended; the next one is coming

    # -- receiving ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ClientEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ClientEvent]:
        async for event in self._events_rx:
            yield event

    def _publish(self, event: ClientEvent) -> None:
        # Bounded (``max_events``): when nobody iterates, the oldest events make room, so
        # a client used with handlers only never accumulates what it received.
        while True:
            try:
                self._events_tx.send_nowait(event)
                return
            except anyio.WouldBlock:
                if not self._dropping:
                    self._dropping = True
                    log.warning("client event queue full: dropping the oldest events")
                try:
                    self._events_rx.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    return
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return

    def _set_state(self, state: ConnectionState, code: CloseCode | None = None) -> None:
        self.state = state
        if state is ConnectionState.CONNECTED:
            self._connected.set()
        elif self._connected.is_set():
            self._connected = anyio.Event()
        encoding = self.encoding if state is ConnectionState.CONNECTED else None
        self._publish(StateChanged(state=state, code=code, url=self.url, encoding=encoding))

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, FrameReceived):
            self._in_handler = True
            try:
                await self.router.dispatch(self, event.frame, event.kind)
            except Exception:  # an application bug must not tear the client down
                log.exception("client handler failed for a %s frame", event.kind.value)
            finally:
                self._in_handler = False
            self._publish(event)
        elif isinstance(event, MessageAcked):
            self._resolve(event.message_id, None)
        elif isinstance(event, AckTimedOut):
            self._resolve(event.message_id, "ack_timeout")
        elif isinstance(event, HandshakeCompleted):
            self._set_state(ConnectionState.CONNECTED)
        elif isinstance(event, Kicked):
            self._publish(event)
        elif isinstance(event, ConnectionClosed):
            log.info("connection closed: %s (%s)", event.code, event.reason)
            if self._connected.is_set():  # sends now wait for the next connection
                self._connected = anyio.Event()

    def _resolve(self, message_id: str, error: str | None) -> None:
        waiter = self._waiters.pop(message_id, None)
        if waiter is not None:
            waiter.error = error
            waiter.done.set()

    # -- the connection task -------------------------------------------------------------------

    async def _dial(self, url: str) -> Transport:
        # Each transport bounds its own connect by ``connect_timeout`` and says what timed
        # out (which URL, which stage); a second, outer deadline here would race it and
        # replace that message with a bare TimeoutError.
        scheme = url.partition("://")[0].lower()
        if scheme in ("ws", "wss"):
            from ._websocket import connect_websocket

            return await connect_websocket(
                url,
                ssl_context=self.ssl_context,
                max_message=self.config.limits.max_frame,
                connect_timeout=self.connect_timeout,
            )
        if scheme == "quic":
            from ._quic import connect_quic

            return await connect_quic(
                url,
                verify=self.quic_verify,
                alpn=self.quic_alpn,
                idle_timeout=self._quic_idle_timeout(),
                connect_timeout=self.connect_timeout,
            )
        raise ValueError(f"unsupported URL scheme in {url!r} (ws, wss, quic)")

    def _quic_idle_timeout(self) -> float:
        """Above the longest silence the core tolerates (the background liveness timeout),
        so the heartbeat, not QUIC, decides that a connection is dead (B25)."""
        c = self.config
        background = c.heartbeat_timeout * c.background_interval / c.heartbeat_interval
        return max(120.0, c.heartbeat_timeout, background) + 30.0

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (DESIGN §5)."""
        # 2**attempt is capped first: after ~4 h of failures (attempt 1024) the float
        # product overflowed and ended the client.
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 64)))

    async def _run_scoped(self) -> None:
        with self._run_scope:
            await self._run()

    async def _run(self) -> None:
        attempt = 0
        self._set_state(ConnectionState.CONNECTING)
        try:
            while not self._closing:
                try:
                    transport, self.url = await race(
                        self.urls, self._dial, stagger=self.race_stagger, broken=self.broken
                    )
                except ConnectionError as exc:
                    self.connect_error = exc
                    log.warning("%s", exc)
                    if not self.reconnect:
                        break
                    await anyio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                self.connect_error = None
                core = ClientConnection(
                    self.config, ids=process_ids(), framing=transport.framing, resend=self._carry
                )
                self._carry = []
                driver = ConnectionDriver(core, transport, self._on_event)
                self._core, self._driver = core, driver
                core.connect(now())
                self._set_state(ConnectionState.NEGOTIATING)
                driver.flush()  # written at once where the transport can (plain ws)
                await driver.run()
                self._core = self._driver = None
                self._carry = core.pending_sends()
                self.close_code = core.close_code
                if self.state is ConnectionState.CONNECTED:
                    attempt = 0
                code = core.close_code
                if self._closing or not self.reconnect or (code is not None and not code.reconnect):
                    break
                self._set_state(ConnectionState.RECONNECTING, code)
                await anyio.sleep(self._backoff(attempt))
                attempt += 1
        finally:
            reason = "closed" if self.close_code is None else self.close_code.code
            for ident in list(self._waiters):
                self._resolve(ident, reason)
            self._set_state(ConnectionState.CLOSED, self.close_code)
            self._connected.set()  # wake wait_connected(), which now raises
            self._events_tx.close()
            self._finished.set()
