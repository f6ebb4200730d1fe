"""The one driver loop, shared by every transport and by client and server.

Theory of operation: one task reads (``transport.receive``, interrupted by the core's
single deadline), feeds the core, hands every event to the application *in order* (awaited,
no task per frame: DESIGN §1), and writes. Output leaves in one of two ways:

* at once, when the transport offers ``send_nowait`` (WebSocket on plain TCP), nothing is
  queued or being written before it, and the kernel takes it: an application's send from
  any task, a broadcast, a kick, a verdict — no task switch, no writer task;
* otherwise queued in a bounded list that a writer task empties with one
  ``transport.send`` per turn (everything queued meanwhile is coalesced). The writer is
  started when there is something for it and ends when there is nothing left, so an idle
  connection has one task, not two. What ``send_nowait`` could not write (a full kernel
  buffer) is finished by the writer before anything else.

What the reading task itself produces (the core's PONG or ERROR, the hub's ACK after a
handler) is queued, not written, and goes out in one write when the reader next waits
for input or yields: the replies of one read, or of a burst, share a system call. So
that a handler which waits on something slow does not hold them back, a writer is
started before a handler runs while replies are queued; it only gets to run if the
handler does wait (otherwise the reader has written everything first, and it ends).
If the list is over its bounds the peer is not reading: the connection is closed with
``slow_consumer`` and nobody waits for it (DESIGN §6).

Input that the transport already holds (a WebSocket read carries many messages) is taken
with its optional ``receive_nowait`` without a cancel scope per message; every
``_BURST`` messages the reader writes the replies so far, checks the core's timers and
yields once, so a pipelining peer never waits for a whole burst, and a busy peer cannot
starve our timers or other connections.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel

from flare_proto import CloseCode, Event, Framing
from flare_proto._connection import ConnectionBase

from ._clock import now
from ._transport import Transport, TransportClosed

log = logging.getLogger("flare")

EventHandler = Callable[[Event], Awaitable[None]]
ReceiveNowait = Callable[[], "bytes | TransportClosed | None"]
SendNowait = Callable[[list[bytes]], bool]

_ALARM_SLACK = 0.001
"""An alarm ringing this close (seconds) before the core's deadline counts as on time
(the loop's clock and the core's are different clocks)."""

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
        self._tg: anyio.abc.TaskGroup | None = None  # run()'s, for the writer task
        self._writing = False  # the writer task exists (started, not finished)
        self._out_closed = False
        self._overflow = False
        self._transport_gone = False
        self._read_scope: anyio.CancelScope | None = None
        # On asyncio the reader waits without a deadline and one alarm per connection,
        # seldom re-armed (see _arm), interrupts it: a deadline per wait put a timer in
        # asyncio's heap for every frame received.
        # trio (cheap timers) keeps the deadline on the wait.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = math.inf  # core-clock time the alarm is set for
        self._drain_timeout = drain_timeout
        # Optional (not in the Transport protocol): a write made at once, without a task
        # (WebSocketTransport on plain TCP): see the module docstring.
        self._send_nowait: SendNowait | None = getattr(transport, "send_nowait", None)
        self._drain = False  # send_nowait left a backlog for the writer to finish

    # -- called by anyone holding the driver ---------------------------------------------

    def flush(self) -> None:
        """Send whatever the core has to send, without blocking: written at once when
        the transport can and nothing is queued before it, else queued for the writer
        task. Call after every core call (from any task: it also re-arms the reading
        task's timer if the core's deadline moved earlier, and wakes it if the core
        closed)."""
        core = self.core
        chunks = core.data_to_send()
        if chunks and not self._overflow and not self._out_closed:
            # At once only with nothing queued or being written before it (order).
            written = (
                not self._pending
                and not self._writing
                and self._send_nowait is not None
                and self._write_now(chunks)
            )
            if not written:
                self._queue(chunks)
                self._start_writer()
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
            if self._loop is not None:
                # Exactly, later too: not per frame (the reading task's own output is
                # not flushed here), and it spares an alarm armed for a deadline that
                # is gone (auth_timeout, once the verdict is in) a useless ring.
                self._arm(deadline, exact=True)
                return
            at = anyio.current_time() + max(0.0, deadline - now())
            if at < scope.deadline:
                scope.deadline = at

    def _arm(self, deadline: float, *, exact: bool = False) -> None:
        """asyncio: have the alarm ring at ``deadline`` (core clock) or earlier. An alarm
        set for an earlier time is mostly left alone (unless ``exact``): when it rings it
        re-arms for the core's deadline then. So a deadline that only moves later (the
        idle deadline, pushed back by every frame) costs no timer per frame."""
        if deadline >= self._alarm_at:
            if deadline == self._alarm_at:
                return
            if not exact:
                # Later: keep the alarm unless it would ring before half the time left
                # (a deadline that is gone, e.g. auth_timeout once accepted): at most one
                # timer per half idle period instead of one per frame.
                t = now()
                if self._alarm_at - t >= (deadline - t) / 2:
                    return
        loop = self._loop
        assert loop is not None
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm_at = deadline
        self._alarm = loop.call_at(loop.time() + max(0.0, deadline - now()), self._ring)

    def _ring(self) -> None:
        self._alarm, self._alarm_at = None, math.inf
        core = self.core
        deadline = core.next_deadline()
        if deadline is None or core.closed:
            return
        if deadline - now() > _ALARM_SLACK:
            self._arm(deadline)  # it moved later meanwhile
        elif self._read_scope is not None:
            self._read_scope.cancel()  # the reader handles the timer and re-arms

    def _defer(self) -> None:
        """The reading task's own flush: queue the core's output; the reader writes it
        all at once when it next waits for input or yields (module docstring)."""
        chunks = self.core.data_to_send()
        if chunks and not self._overflow and not self._out_closed:
            self._queue(chunks)

    def _queue(self, chunks: list[bytes]) -> None:
        size = sum(map(len, chunks))
        if self._queued_bytes + size > self._max_bytes or self._pending_batches >= self._max_queue:
            # The peer stopped reading: give up on it without waiting (slow_consumer).
            self._overflow = True
            self.core.abort(CloseCode.SLOW_CONSUMER, "outbound queue full")
            return
        self._pending += chunks
        self._pending_batches += 1
        self._queued_bytes += size

    def _start_writer(self) -> None:
        if not self._writing and self._tg is not None:
            self._writing = True
            self._tg.start_soon(self._writer)

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
            self._start_writer()
        return taken

    def _send_pending(self) -> None:
        """The reader, about to wait or yield: write everything queued in one go, at once
        if the transport can (it refuses while the writer is mid-write), else by the
        writer task."""
        batch = self._pending
        if not batch:
            return
        if self._send_nowait is not None and self._write_now(batch):
            self._pending = []
            self._pending_batches = 0
            self._queued_bytes -= sum(map(len, batch))
        else:
            self._start_writer()

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
                self._tg = tg
                if self._pending:  # flushed before run() (the client's CONNECT)
                    self._start_writer()
                try:
                    await self._read_loop()
                finally:
                    # Let the writer send what the core produced last (ERROR, CLOSE, KICKED).
                    self._out_closed = True
                    if self._pending or self._drain:
                        self._start_writer()
                    if self._overflow:
                        tg.cancel_scope.cancel()
                    else:
                        # The peer may have stopped reading: bound the final drain.
                        tg.cancel_scope.deadline = anyio.current_time() + self._drain_timeout
        finally:
            if self._alarm is not None:
                self._alarm.cancel()
                self._alarm, self._alarm_at = None, math.inf
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
                        self._defer()
                        await self._deliver()
                    self._send_pending()  # the burst's replies, in one write
                    await anyio.lowlevel.checkpoint()
                    # Another task may have made events meanwhile (wake() finds no read
                    # scope to cancel here).
                    await self._deliver()
                    burst = 0
                    continue
                burst = 0
                deadline = core.next_deadline()
                self._send_pending()  # everything this read produced, in one write
                if self._loop is None:
                    wait = math.inf if deadline is None else max(0.0, deadline - now())
                    at = anyio.current_time() + wait
                else:
                    if deadline is not None:
                        self._arm(deadline)
                    at = math.inf
                with anyio.CancelScope(deadline=at) as scope:
                    self._read_scope = scope
                    item = await transport.receive()
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
            self._defer()  # the core's own replies (PONG, ERROR) go first
            # _deliver, inlined (a coroutine call per message is measurable); handlers
            # flush what they send, one more flush covers those that do not.
            events = core.events_received()
            if events:
                while events:
                    for event in events:
                        if self._pending and not self._writing:
                            # A handler may wait on something slow: the replies queued so
                            # far must not wait with it. The writer runs only if it does;
                            # otherwise the reader writes them first and the writer ends.
                            self._start_writer()
                        await on_event(event)
                    events = core.events_received()
                self._defer()
        await self._deliver()

    async def _deliver(self) -> None:
        # A handler may make the core produce more events (accept() releases held frames):
        # deliver until there are none left.
        core = self.core
        on_event = self._on_event
        while events := core.events_received():
            for event in events:
                if self._pending and not self._writing:
                    self._start_writer()  # as in _read_loop
                await on_event(event)
            self._defer()

    async def _writer(self) -> None:
        """Write what is queued until nothing is; started when needed (module
        docstring), so an idle connection has no writer task."""
        transport = self.transport
        try:
            while self._pending or self._drain:
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
        finally:
            self._writing = False
