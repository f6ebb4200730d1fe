"""The one driver loop, shared by every transport and by client and server.

Theory of operation: one task reads (``transport.receive``, interrupted by the core's
single deadline), feeds the core, hands every event to the application *in order* (awaited,
no task per frame: DESIGN §1), and flushes. Output goes to a bounded list that one writer
task empties with one ``transport.send`` per wake-up (everything flushed meanwhile is
coalesced); other tasks (the server hub sending to this connection) only call the core and
:meth:`flush`, which never blocks. If the list is over its bounds the peer is not reading:
the connection is closed with ``slow_consumer`` and nobody waits for it (DESIGN §6).

Input that the transport already holds (a WebSocket read carries many messages) is taken
with its optional ``receive_nowait`` without a cancel scope per message; every
``_BURST`` messages the reader checks the core's timers and yields once, so the writer
sends the replies of the first messages while the rest are processed (a pipelining peer
then never waits for a whole burst), and a busy peer cannot starve our timers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

from flare_proto import CloseCode, Event, Framing
from flare_proto._connection import ConnectionBase

from ._clock import now
from ._transport import Transport, TransportClosed

log = logging.getLogger("flare")

EventHandler = Callable[[Event], Awaitable[None]]
ReceiveNowait = Callable[[], "bytes | TransportClosed | None"]
SendNowait = Callable[[list[bytes]], bool]

_BURST = 64
"""Buffered messages processed in a row before the reader yields to the writer: large
enough that a write (a system call) carries many replies, small enough that a pipelining
peer gets replies while we work through the rest, and other connections get their turn
(benchmarks/p_throughput.py: 16 costs ~10 % more CPU per message than 64)."""


class ConnectionDriver:
    """Runs one core over one transport until the connection ends.

    ``on_event`` is awaited for every core event, in order. ``max_queue`` bounds the
    batches waiting to be written (one batch per flush that produced output) and
    ``max_queue_bytes`` their total size; past either the peer is not reading.
    ``drain_timeout`` bounds how long the last frames (ERROR, CLOSE, KICKED) may take to
    write once the core has closed.
    """

    def __init__(
        self,
        core: ConnectionBase,
        transport: Transport,
        on_event: EventHandler,
        *,
        max_queue: int = 1024,
        max_queue_bytes: int = 32 * 1024 * 1024,
        drain_timeout: float = 1.0,
    ) -> None:
        self.core = core
        self.transport = transport
        self._on_event = on_event
        self._pending: list[bytes] = []  # flushed, not yet taken by the writer
        self._pending_batches = 0
        self._max_queue = max_queue
        self._queued_bytes = 0  # pending + being written
        self._max_bytes = max_queue_bytes
        self._wake = anyio.Event()
        self._writer_idle = False
        self._out_closed = False
        self._overflow = False
        self._transport_gone = False
        self._read_scope: anyio.CancelScope | None = None
        self._drain_timeout = drain_timeout
        # Optional (not in the Transport protocol): a write made at once, without a task
        # (WebSocketTransport on plain TCP). Used when the writer has nothing in hand:
        # from other tasks while the reader waits (a broadcast, a kick), and by the
        # reader itself for what it produced, just before it waits for input.
        self._send_nowait: SendNowait | None = getattr(transport, "send_nowait", None)
        self._waiting_input = False  # the reader is blocked in transport.receive()
        self._drain = False  # send_nowait left a backlog for the writer to finish

    # -- called by anyone holding the driver ---------------------------------------------

    def flush(self) -> None:
        """Queue whatever the core has to send; never blocks. Call after every core call
        (from any task: it also re-arms the reading task's timer if the core's deadline
        moved earlier, and wakes it if the core closed)."""
        core = self.core
        chunks = core.data_to_send()
        if (
            chunks
            and self._waiting_input
            and self._writer_idle
            and not self._pending
            and self._send_nowait is not None
            and not self._overflow
            and not self._out_closed
            and self._write_now(chunks)
        ):
            pass  # another task's output, the writer idle: written without a wake-up
        elif chunks and not self._overflow and not self._out_closed:
            size = sum(map(len, chunks))
            if (
                self._queued_bytes + size > self._max_bytes
                or self._pending_batches >= self._max_queue
            ):
                # The peer stopped reading: give up on it without waiting (slow_consumer).
                self._overflow = True
                core.abort(CloseCode.SLOW_CONSUMER, "outbound queue full")
            else:
                self._pending += chunks
                self._pending_batches += 1
                self._queued_bytes += size
                if self._writer_idle:
                    self._writer_idle = False
                    self._wake.set()
        scope = self._read_scope
        if scope is None:
            return
        if core.closed:
            # Closed from another task (kick, shutdown, overflow): stop waiting for input.
            scope.cancel()
            return
        deadline = core.next_deadline()
        if deadline is not None:
            # Another task moved a deadline earlier (a SEND's ACK timeout, a shorter PING
            # interval): the reading task must not sleep past it.
            at = anyio.current_time() + max(0.0, deadline - now())
            if at < scope.deadline:
                scope.deadline = at

    def _write_now(self, chunks: list[bytes]) -> bool:
        """Hand ``chunks`` to the transport's ``send_nowait``; whether it took them. A
        backlog (the kernel buffer was full) is left to the writer."""
        assert self._send_nowait is not None
        if self._transport_gone:
            return True  # nowhere to go: dropped, as the writer would
        try:
            taken = self._send_nowait(chunks)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._transport_gone = True
            return True
        backlog: int = getattr(self.transport, "backlog", 0)
        if taken and backlog:
            self._drain = True
            if self._writer_idle:
                self._writer_idle = False
                self._wake.set()
        return taken

    def _send_pending_now(self) -> None:
        """The reader, about to wait for input: write what it produced at once rather
        than leave it to the writer task's next turn (one event-loop pass less per reply;
        the writer, if it was woken, then finds nothing to do)."""
        batch = self._pending
        if batch and self._send_nowait is not None and self._write_now(batch):
            self._pending = []
            self._pending_batches = 0
            self._queued_bytes -= sum(map(len, batch))

    def wake(self) -> None:
        """Make the reading task deliver the core's pending events now (e.g. after an
        authentication verdict given from another task)."""
        if self._read_scope is not None:
            self._read_scope.cancel()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the connection to its end, then close the transport with its code."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                try:
                    await self._read_loop()
                finally:
                    # Let the writer send what the core produced last (ERROR, CLOSE, KICKED).
                    self._out_closed = True
                    self._wake.set()
                    if self._overflow:
                        tg.cancel_scope.cancel()
                    else:
                        # The peer may have stopped reading: bound the final drain.
                        tg.cancel_scope.deadline = anyio.current_time() + self._drain_timeout
        finally:
            code = self.core.close_code
            with anyio.CancelScope(shield=True):
                await self.transport.aclose(
                    None if code is None else code.number,
                    self.core.close_reason if code is None else code.code,
                )

    async def _read_loop(self) -> None:
        core = self.core
        transport = self.transport
        feed = core.receive_data if transport.framing is Framing.STREAM else core.receive_message
        # Optional (not in the Transport protocol): buffered input without waiting.
        nowait: ReceiveNowait | None = getattr(transport, "receive_nowait", None)
        on_event = self._on_event
        burst = 0
        while not core.closed:
            item: bytes | TransportClosed | None = None
            if nowait is not None and burst < _BURST:
                item = nowait()
            if item is not None:
                burst += 1
                t = now()
            else:
                if burst >= _BURST:
                    # Yield so the writer sends what this burst produced; fire timers that
                    # came due meanwhile (a busy peer must not starve them).
                    t = now()
                    due = core.next_deadline()
                    if due is not None and due <= t:
                        core.handle_timer(t)
                        self.flush()
                        await self._deliver()
                    await anyio.lowlevel.checkpoint()
                    # Another task may have made events meanwhile (wake() finds no read
                    # scope to cancel here).
                    await self._deliver()
                    burst = 0
                    continue
                burst = 0
                deadline = core.next_deadline()
                wait = math.inf if deadline is None else max(0.0, deadline - now())
                self._send_pending_now()
                with anyio.CancelScope(deadline=anyio.current_time() + wait) as scope:
                    self._read_scope = scope
                    self._waiting_input = True
                    try:
                        item = await transport.receive()
                    finally:
                        self._waiting_input = False
                self._read_scope = None
                t = now()
                if core.closed:  # closed from another task while we were reading
                    break
                # A busy peer must not starve our own timers.
                due = core.next_deadline()
                if due is not None and due <= t:
                    core.handle_timer(t)
            if item is None:
                pass  # the deadline passed: handled just above
            elif isinstance(item, TransportClosed):
                self._transport_gone = not item.half
                core.receive_close(item.number, item.reason, t)
            else:
                feed(item, t)
            # The core's own replies (PONG, ERROR) go out before any handler runs.
            self.flush()
            # _deliver, inlined (a coroutine call per message is measurable); handlers
            # flush what they send, one more flush covers those that do not.
            events = core.events_received()
            if events:
                while events:
                    for event in events:
                        await on_event(event)
                    events = core.events_received()
                self.flush()
        await self._deliver()

    async def _deliver(self) -> None:
        # A handler may make the core produce more events (accept() releases held frames):
        # deliver until there are none left.
        core = self.core
        on_event = self._on_event
        while events := core.events_received():
            for event in events:
                await on_event(event)
            self.flush()

    async def _writer(self) -> None:
        transport = self.transport
        while True:
            if not self._pending and not self._drain:
                if self._out_closed:
                    return
                self._wake = anyio.Event()
                self._writer_idle = True
                await self._wake.wait()
                continue
            self._drain = False  # a send, even of nothing, writes the backlog first
            # Everything flushed since the last write goes out in one transport.send.
            batch, self._pending = self._pending, []
            self._pending_batches = 0
            size = sum(map(len, batch))
            if not self._transport_gone:
                try:
                    await transport.send(batch)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    self._transport_gone = True
            self._queued_bytes -= size
