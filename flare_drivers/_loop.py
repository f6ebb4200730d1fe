"""The one driver loop, shared by every transport and by client and server.

Theory of operation: one task reads (``transport.receive``, interrupted by the core's
single deadline), feeds the core, hands every event to the application *in order* (awaited,
no task per frame: DESIGN §1), and flushes. Output goes through a bounded queue to one
writer task that coalesces everything queued into one ``transport.send``; other tasks
(the server hub sending to this connection) only call the core and :meth:`flush`, which
never blocks. If the queue is full the peer is not reading: the connection is closed with
``slow_consumer`` and nobody waits for it (DESIGN §6).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from flare_proto import CloseCode, Event, Framing
from flare_proto._connection import ConnectionBase

from ._clock import now
from ._transport import Transport, TransportClosed

log = logging.getLogger("flare")

EventHandler = Callable[[Event], Awaitable[None]]


class ConnectionDriver:
    """Runs one core over one transport until the connection ends.

    ``on_event`` is awaited for every core event, in order. ``max_queue`` bounds the
    batches waiting to be written (one batch per flush) and ``max_queue_bytes`` their
    total size; past either the peer is not reading. ``drain_timeout`` bounds how long
    the last frames (ERROR, CLOSE, KICKED) may take to write once the core has closed.
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
        send, receive = anyio.create_memory_object_stream[list[bytes]](max_queue)
        self._out: MemoryObjectSendStream[list[bytes]] = send
        self._out_rx: MemoryObjectReceiveStream[list[bytes]] = receive
        self._overflow = False
        self._transport_gone = False
        self._read_scope: anyio.CancelScope | None = None
        self._drain_timeout = drain_timeout
        self._max_bytes = max_queue_bytes
        self._queued_bytes = 0

    # -- called by anyone holding the driver ---------------------------------------------

    def flush(self) -> None:
        """Queue whatever the core has to send; never blocks. Call after every core call
        (from any task: it also re-arms the reading task's timer if the core's deadline
        moved earlier, and wakes it if the core closed)."""
        core = self.core
        chunks = core.data_to_send()
        if chunks and not self._overflow:
            size = sum(map(len, chunks))
            try:
                if self._queued_bytes + size > self._max_bytes:
                    raise anyio.WouldBlock
                self._out.send_nowait(chunks)
                self._queued_bytes += size
            except anyio.WouldBlock:
                # The peer stopped reading: give up on it without waiting (slow_consumer).
                self._overflow = True
                core.abort(CloseCode.SLOW_CONSUMER, "outbound queue full")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
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
                    self._out.close()
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
        stream = self.transport.framing is Framing.STREAM
        while not core.closed:
            deadline = core.next_deadline()
            wait = math.inf if deadline is None else max(0.0, deadline - now())
            item: bytes | TransportClosed | None = None
            with anyio.CancelScope(deadline=anyio.current_time() + wait) as scope:
                self._read_scope = scope
                item = await self.transport.receive()
            self._read_scope = None
            t = now()
            if core.closed:  # closed from another task while we were reading
                break
            if item is None:
                core.handle_timer(t)
            elif isinstance(item, TransportClosed):
                self._transport_gone = not item.half
                core.receive_close(item.number, item.reason, t)
            elif stream:
                core.receive_data(item, t)
            else:
                core.receive_message(item, t)
            # A busy peer must not starve our own timers.
            due = core.next_deadline()
            if due is not None and due <= t:
                core.handle_timer(t)
            self.flush()
            await self._deliver()
        await self._deliver()

    async def _deliver(self) -> None:
        # A handler may make the core produce more events (accept() releases held frames):
        # deliver until there are none left.
        while events := self.core.events_received():
            for event in events:
                await self._on_event(event)
                self.flush()

    async def _writer(self) -> None:
        async with self._out_rx:
            async for batch in self._out_rx:
                while True:  # coalesce everything already queued into one write
                    try:
                        batch.extend(self._out_rx.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                size = sum(map(len, batch))
                if not self._transport_gone:
                    try:
                        await self.transport.send(batch)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        self._transport_gone = True
                self._queued_bytes -= size
