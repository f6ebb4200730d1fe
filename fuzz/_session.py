"""Drive one connection core (client or server) and check it after every call.

:class:`Session` wraps a :class:`~flare_proto.ClientConnection` or
:class:`~flare_proto.ServerConnection` on a fake clock. Each input method (bytes, a timer
tick, a transport end, or an application action passed as a callable) is followed by
:meth:`Session.drain`, which empties ``data_to_send()`` and ``events_received()`` and checks:

* no exception escaped the core (the call itself; peer input must never raise, DESIGN §1);
* every event is an :data:`~flare_proto.Event`; nothing follows a ``ConnectionClosed``;
  there is at most one; its code is ``None`` or a :class:`~flare_proto.CloseCode`;
  ``closed`` is true exactly when it was emitted, and ``close_code`` matches it;
* every byte written decodes as a frame (with ``Framing.STREAM``: the drained items are
  whole length-prefixed frames, never an end-of-stream marker); ERROR/CLOSE frames carry
  documented codes, always present (only a client's normal ``close()`` sends CLOSE without
  one); nothing is written after the connection closed; a connection that was ``OPEN``
  before the call writes in its negotiated format and compression (B9);
* closes are announced: an ERROR, CLOSE or KICKED written is the call's last frame and the
  connection is then closed by us with its code; a connection that closes by itself (peer
  input, a timer, a transport end) either was closed by the peer (``by_peer``; only then
  may the code be ``None``: EOF, an end-of-stream marker, an unknown close number, an
  ERROR/CLOSE without a documented code) or announced it with such a frame, code and
  all. Only the application's ``abort()`` closes without a frame, and only ``abort(None)``
  or a client's ``close()`` closes locally without a code;
* timers: ``next_deadline()`` is ``None`` once closed, never NaN, and after
  ``handle_timer(now)`` with ``now`` at the deadline the next deadline is later (a driver
  sleeping until it never spins);
* memory (white-box): the stream framer buffers at most ``max_frame + 3`` bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flare_proto import (
    ClientConnection,
    Compression,
    ConnectionClosed,
    Event,
    Frame,
    Framing,
    LengthPrefixFramer,
    ServerConnection,
)

from ._invariants import (
    EVENT_TYPES,
    PEER_LIMITS,
    Finding,
    check,
    check_close_event,
    closing_code,
    decode_sent,
)

__all__ = ["START", "Session", "delta_seconds"]

START = 1000.0
"""The fake clock's start (monotonic seconds)."""

Connection = ClientConnection | ServerConnection


def delta_seconds(byte: int) -> float:
    """A clock step from one input byte: quadratic, 0 to ~1300 s, so both sub-second steps
    and jumps past every timeout (30 s auth, 90 s liveness, 300 s idle) are one byte away."""
    return byte * byte / 50.0


class Session:
    """One connection core on a fake clock, checked after every call."""

    def __init__(self, conn: Connection, framing: Framing) -> None:
        self.conn = conn
        self.framing = framing
        self.now = START
        self.events: list[Event] = []
        """Every event drained so far, in order."""
        self.sent: list[Frame] = []
        """Every frame written so far, decoded, in order."""
        self.closed_event: ConnectionClosed | None = None
        self._out = LengthPrefixFramer(PEER_LIMITS.max_frame) if framing is Framing.STREAM else None

    # -- inputs ------------------------------------------------------------------------

    def deliver(self, data: bytes) -> list[Event]:
        """Peer bytes arrive: one transport message, or a chunk of the stream."""
        conn, now = self.conn, self.now
        snap = self._snapshot()
        if self.framing is Framing.STREAM:
            conn.receive_data(data, now)
        else:
            conn.receive_message(data, now)
        return self.drain("receive", snap)

    def advance(self, seconds: float) -> list[Event]:
        """Move the clock forward by ``seconds`` and call ``handle_timer``."""
        self.now += seconds
        return self.tick()

    def jump(self, extra: float = 0.0) -> list[Event]:
        """Move the clock to the next deadline (plus ``extra``) and call ``handle_timer``."""
        deadline = self.conn.next_deadline()
        if deadline is not None and math.isfinite(deadline):
            self.now = max(self.now, deadline + extra)
        return self.tick()

    def tick(self) -> list[Event]:
        """``handle_timer(now)``; if a deadline was due, the next one must be later."""
        conn, now = self.conn, self.now
        before = conn.next_deadline()
        snap = self._snapshot()
        conn.handle_timer(now)
        events = self.drain("handle_timer", snap)
        after = conn.next_deadline()
        if before is not None and before <= now:
            check(
                after is None or after > now,
                f"handle_timer({now}) left next_deadline() at {after} (was {before}): "
                "a driver sleeping until it would spin",
            )
        return events

    def end(self, number: int | None, reason: str = "") -> list[Event]:
        """The transport ends: ``receive_eof`` (``number`` None) or ``receive_close``."""
        snap = self._snapshot()
        if number is None:
            self.conn.receive_eof(self.now)
        else:
            self.conn.receive_close(number, reason, self.now)
        return self.drain("transport end", snap)

    def act(
        self,
        label: str,
        action: Callable[[], object],
        *,
        silent: bool = False,
        codeless: bool = False,
    ) -> list[Event]:
        """An application call (accept, send, close...); the harness only makes legal ones.
        ``silent``: the call may close without writing a frame (``abort``); ``codeless``:
        it may close without a code (``abort(None)``, a client's ``close()``)."""
        snap = self._snapshot()
        action()
        return self.drain(label, snap, silent=silent, codeless=codeless)

    # -- checks ------------------------------------------------------------------------

    def _snapshot(self) -> tuple[bool, bool, object, Compression]:
        conn = self.conn
        return conn.closed, conn.state.name == "OPEN", conn.format, conn.compression

    def drain(
        self,
        label: str,
        snap: tuple[bool, bool, object, Compression],
        *,
        silent: bool = False,
        codeless: bool = False,
    ) -> list[Event]:
        """Drain and check the output and the events of the call just made (``silent``,
        ``codeless``: see :meth:`act`; every other call must announce a close it makes
        and give it a code)."""
        conn = self.conn
        closed_before, open_before, fmt_before, comp_before = snap
        chunks = conn.data_to_send()
        written: list[Frame] = []
        if chunks:
            check(not closed_before, f"{label}: wrote {len(chunks)} chunks after closing")
            for frame, fmt, compression in self._decode_chunks(chunks, label, codeless):
                if open_before:
                    check(
                        fmt == fmt_before and compression in (Compression.NONE, comp_before),
                        f"{label}: an OPEN connection negotiated {fmt_before!r}/"
                        f"{comp_before!r} wrote a frame in {fmt!r}/{compression!r}",
                    )
                self.sent.append(frame)
                written.append(frame)
        events = conn.events_received()
        closed_now: ConnectionClosed | None = None
        for event in events:
            check(isinstance(event, EVENT_TYPES), f"{label}: not an Event: {event!r}")
            check(
                self.closed_event is None,
                f"{label}: event {event!r} after {self.closed_event!r}",
            )
            if isinstance(event, ConnectionClosed):
                check_close_event(event)
                self.closed_event = closed_now = event
        self.events.extend(events)
        closed = self.closed_event is not None
        check(
            conn.closed == closed,
            f"{label}: closed is {conn.closed} but ConnectionClosed "
            f"{'was' if closed else 'was not'} emitted",
        )
        if self.closed_event is not None:
            check(
                conn.close_code == self.closed_event.code,
                f"{label}: close_code {conn.close_code!r} != event code {self.closed_event.code!r}",
            )
            check(
                conn.next_deadline() is None,
                f"{label}: closed but next_deadline() is {conn.next_deadline()}",
            )
        self._check_close(label, written, closed_now, silent=silent, codeless=codeless)
        deadline = conn.next_deadline()
        check(deadline is None or not math.isnan(deadline), f"{label}: next_deadline() is NaN")
        framer = getattr(conn, "_framer", None)
        if isinstance(framer, LengthPrefixFramer):
            limit = conn.config.limits.max_frame + 3
            check(
                framer.buffered <= limit,
                f"{label}: stream framer buffers {framer.buffered} bytes (max {limit})",
            )
        return events

    @staticmethod
    def _check_close(
        label: str,
        written: list[Frame],
        closed: ConnectionClosed | None,
        *,
        silent: bool,
        codeless: bool,
    ) -> None:
        """The close rules of the module docstring, for one call's frames and close."""
        for index, frame in enumerate(written):
            ends, code = closing_code(frame)
            if not ends:
                continue
            check(
                index == len(written) - 1,
                f"{label}: wrote {len(written) - index - 1} frame(s) after closing frame {frame}",
            )
            check(
                closed is not None and not closed.by_peer and closed.code is code,
                f"{label}: wrote a closing frame with code {code} but the call ended with "
                f"{closed!r}",
            )
        if closed is None or closed.by_peer:
            return
        check(
            codeless or closed.code is not None,
            f"{label}: closed on our side without a code: {closed!r}",
        )
        check(
            silent or (bool(written) and closing_code(written[-1])[0]),
            f"{label}: closed on our side ({closed!r}) without writing ERROR, CLOSE or KICKED",
        )

    def _decode_chunks(
        self, chunks: list[bytes], label: str, codeless: bool
    ) -> list[tuple[Frame, object, Compression]]:
        out = self._out
        if out is None:
            return [decode_sent(chunk, label, codeless_close=codeless) for chunk in chunks]
        payloads: list[bytes] = []
        for chunk in chunks:
            try:
                payloads += out.receive(chunk)
            except Exception as exc:
                raise Finding(f"{label}: written stream does not frame: {exc!r}") from None
        check(not out.ended, f"{label}: wrote an end-of-stream marker (length 0)")
        check(out.buffered == 0, f"{label}: drained output ends inside a frame")
        return [decode_sent(payload, label, codeless_close=codeless) for payload in payloads]
