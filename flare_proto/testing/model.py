"""A hypothesis state machine over a client/server pair (STYLE: "tests are the spec").

:class:`ConnectionPairModel` drives one :class:`~flare_proto.ClientConnection` and one
:class:`~flare_proto.ServerConnection` wired back to back by a
:class:`~flare_proto.testing.loopback.Loopback` on a fake clock, through random handshakes
(accept, reject, auth timeout, frames held before the verdict), sends of every kind, server
ACKs (prompt, late, never), timer advances, kicks and server closes, garbage and forged
frames injected on either side, transport ends, and reconnects that resend the SENDs left
unacknowledged. After every step it checks the protocol's invariants:

1. no exception escapes ``receive_*``/``handle_timer`` (only local misuse raises
   :class:`~flare_proto.LocalProtocolError`, and then nothing changes);
2. every :class:`~flare_proto.ConnectionClosed` has a code from the table (or ``None``), each
   side closes exactly once and that is its last event; a closed side has no deadline;
3. nothing reaches the server application before ``accept`` (and nothing after ``reject``);
4. per-connection order: what the server application receives from the client is a
   subsequence of what the client sent, in order (exactly a prefix when nothing was
   injected), resends first on a new connection;
5. a SEND the client saw ACKed was delivered to the server at least once, is never resent
   and never delivered again; a SEND neither ACKed nor timed out is never lost (it is in
   ``pending_sends()``);
6. after :meth:`Loopback.advance` no deadline of either side is left in the past;
7. every ERROR/CLOSE frame the server wrote carries a ``code`` from the table, and
   everything either side wrote decodes.

Run it under pytest with a settings profile::

    from hypothesis import settings
    from flare_proto.testing.model import ConnectionPairModel

    class TestConnectionPair(ConnectionPairModel.TestCase):
        settings = settings(max_examples=50, stateful_step_count=30, deadline=None)

or call :func:`run_model`. To check another harness (e.g. a driver on a fake transport),
subclass the model and override :meth:`ConnectionPairModel.make_loopback`.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .._client import ClientConnection
from .._codec import decode_frame, encode_frame
from .._codes import CloseCode
from .._config import ClientConfig, CodecOptions, Limits, ServerConfig
from .._connection import ConnectionBase, Framing
from .._errors import LocalProtocolError
from .._events import (
    AckTimedOut,
    ConnectionClosed,
    ConnectRequested,
    Event,
    FrameReceived,
    HandshakeCompleted,
    Kicked,
    MessageAcked,
)
from .._frames import (
    CLOSE,
    DATA,
    ERROR,
    KICKED,
    PING,
    SEND,
    CommandKind,
    ack_id,
    custom_frame,
    message_frame,
    system_frame,
)
from .._ids import SequentialIds
from .._pb.frame_pb2 import Frame
from .._server import ServerConnection
from .._state import ClientState, ServerState
from .._types import Compression, Format
from .loopback import Loopback
from .strategies import forged_frames, garbage

__all__ = [
    "DEFAULT_SETTINGS",
    "MAX_CONNECTIONS",
    "ConnectionPairModel",
    "ModelViolation",
    "run_model",
]

DEFAULT_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Settings that keep one run of the model within a few seconds per core."""

MAX_CONNECTIONS = 4
"""Connections (reconnects + 1) one example may open: keeps the model's state small."""

_APP_KINDS = (CommandKind.SEND, CommandKind.DATA, CommandKind.CUSTOM)
_KICK_METADATA = {"reason": "device_conflict", "platform": "ios", "new_device_id": "dev-2"}
_T = TypeVar("_T")


class ModelViolation(AssertionError):
    """An invariant of the protocol does not hold (the message says which and where)."""


@dataclass
class _Connection:
    """What the model knows about one connection (one :class:`Loopback`)."""

    pair: Loopback
    resent: list[str]
    """Ids of the SENDs handed to this client as ``resend``."""
    tracked: list[str]
    """SEND ids this client tracks, in order: resends, then new sends."""
    expected: list[str] = field(default_factory=list)
    """Ids of the application frames the client side sent, in the order they went out."""
    received: list[str] = field(default_factory=list)
    """Ids (from ``expected``) of the frames the server application received, in order."""
    accept_mark: int | None = None
    """Index in ``server_events`` at which ``accept`` was called."""
    rejected: bool = False
    injected_to_server: bool = False
    injected_to_client: bool = False
    transport_cut: bool = False
    """One side's transport was ended under it: the other side may close with a code
    (e.g. a stream cut inside a frame) that can no longer reach the first."""
    unacked: list[str] = field(default_factory=list)
    """SEND ids the server application received and has not ACKed yet."""
    server_cursor: int = 0
    client_cursor: int = 0
    server_closed: ConnectionClosed | None = None
    client_closed: ConnectionClosed | None = None
    server_sent_cursor: int = 0
    client_sent_cursor: int = 0
    last_server_frame: Frame | None = None


def _is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(item in it for item in needle)


# -- strategies -------------------------------------------------------------------------

_GARBAGE = st.one_of(
    garbage(),
    forged_frames(),
    st.sampled_from([b"", b"{}", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"]),
)
"""Bytes to inject: :func:`~flare_proto.testing.strategies.garbage` (random bytes, magic
prefixes and junk, damaged frames of any shape) and forged frames of the kinds that
matter to a connection (CONNECT_ACK, ACK, ERROR/CLOSE with table codes, KICKED...),
sound or damaged."""

_PAYLOADS = st.one_of(
    st.binary(max_size=32),
    st.integers(200, 1_200).map(lambda n: b"z" * n),
)

_SECONDS = st.one_of(
    st.floats(0.0, 2.0),
    st.floats(0.0, 400.0),
    st.sampled_from([0.0, 9.999, 10.0, 29.0, 30.0, 40.0, 90.0, 120.0, 300.0]),
)

_CLOSE_NUMBERS = st.one_of(
    st.none(),
    st.sampled_from([c.number for c in CloseCode]),
    st.integers(0, 65_535),
)


# -- the model --------------------------------------------------------------------------


class ConnectionPairModel(RuleBasedStateMachine):
    """Random protocol runs over a client/server pair, checking the invariants above.

    Each example picks a framing (``MESSAGE`` as on WebSocket, ``STREAM`` as on QUIC),
    client and server settings and an ACK policy, then runs up to
    ``stateful_step_count`` steps over up to :data:`MAX_CONNECTIONS` connections.
    """

    def __init__(self) -> None:
        super().__init__()
        self.framing = Framing.MESSAGE
        self.client_config = ClientConfig()
        self.server_config = ServerConfig()
        self.prompt_acks = False
        self.ids = SequentialIds(wall_offset=1_730_000_000.0)
        self.conns: list[_Connection] = []
        self.send_ids: set[str] = set()
        """Every SEND id a client of this model created."""
        self.deliveries: collections.Counter[str] = collections.Counter()
        """How often each of ``send_ids`` reached a server application."""
        self.acked: dict[str, int] = {}
        """ACKed SEND ids -> their delivery count when the ACK was seen."""
        self.timed_out: set[str] = set()
        self.serial = 0

    # -- harness ----------------------------------------------------------------------

    def make_loopback(
        self,
        *,
        framing: Framing,
        client_config: ClientConfig,
        server_config: ServerConfig,
        now: float,
        ids: SequentialIds,
        resend: list[Frame],
    ) -> Loopback:
        """Build the harness for one connection (override to test another harness).

        Both cores share ``ids`` with every earlier connection of the example, as a process
        does, so message ids stay unique across reconnects. Verdicts are the model's, so
        ``auto_accept`` must be off.
        """
        return Loopback(
            client_config,
            server_config,
            framing=framing,
            now=now,
            auto_accept=False,
            ids=ids,
            resend=resend,
        )

    @property
    def conn(self) -> _Connection:
        """The current (latest) connection."""
        return self.conns[-1]

    @property
    def pair(self) -> Loopback:
        """The current connection's harness."""
        return self.conns[-1].pair

    def _new_connection(self, now: float, resend: list[Frame]) -> None:
        ids = [ack_id(frame) for frame in resend]
        pair = self.make_loopback(
            framing=self.framing,
            client_config=self.client_config,
            server_config=self.server_config,
            now=now,
            ids=self.ids,
            resend=resend,
        )
        self.conns.append(_Connection(pair=pair, resent=ids, tracked=list(ids)))

    def _guard(self, what: str, call: Callable[[], _T]) -> _T:
        """Invariant 1: input handling never raises, whatever arrives."""
        try:
            return call()
        except Exception as exc:
            raise ModelViolation(f"{what} raised {exc!r} (connection {len(self.conns)})") from exc

    def _settle(self) -> None:
        """Pump until quiet, observe, and let a prompt server ACK what it received."""
        while True:
            self._guard("pump", self.pair.pump)
            self._observe()
            conn = self.conn
            if not (self.prompt_acks and conn.unacked and self._server_open()):
                return
            server, now = self.pair.server, self.pair.now
            for ident in conn.unacked:
                self._guard("send_ack", functools.partial(server.send_ack, ident, now))
            conn.unacked.clear()

    def _server_open(self) -> bool:
        return self.pair.server.state is ServerState.OPEN

    def _client_open(self) -> bool:
        return self.pair.client.state is ClientState.OPEN

    def _snapshot(self) -> tuple[object, ...]:
        pair = self.pair
        client, server = pair.client, pair.server
        return (
            client.state,
            server.state,
            client.closed,
            server.closed,
            client.close_code,
            server.close_code,
            [ack_id(frame) for frame in client.pending_sends()],
            client.next_deadline(),
            server.next_deadline(),
        )

    def _misuse(self, what: str, call: Callable[[], object]) -> None:
        """Local misuse raises :class:`LocalProtocolError` and changes nothing."""
        before = self._snapshot()
        try:
            call()
        except LocalProtocolError:
            pass
        else:
            raise ModelViolation(f"{what} did not raise LocalProtocolError")
        if self._snapshot() != before:
            raise ModelViolation(f"{what} raised but changed state")
        for side in (self.pair.client, self.pair.server):
            if side.data_to_send() or side.events_received():
                raise ModelViolation(f"{what} raised but produced output")

    def _inject(self, data: bytes, *, to_server: bool) -> None:
        pair = self.pair
        self._guard(
            "inject to " + ("server" if to_server else "client"),
            lambda: pair.inject(data, to_server=to_server),
        )

    # -- setup ------------------------------------------------------------------------

    @initialize(
        framing=st.sampled_from(list(Framing)),
        fmt=st.sampled_from(list(Format)),
        compression=st.sampled_from(list(Compression)),
        force=st.booleans(),
        compress_min=st.sampled_from([0, 64, 256]),
        prefer=st.sampled_from(["client", "server"]),
        max_frame=st.sampled_from([10 * 1024 * 1024, 10 * 1024 * 1024, 1_024]),
        max_held=st.sampled_from([2, 64]),
        prompt_acks=st.sampled_from([False, False, True]),
        start=st.sampled_from(["accept", "accept", "later", None]),
    )
    def setup(
        self,
        framing: Framing,
        fmt: Format,
        compression: Compression,
        force: bool,
        compress_min: int,
        prefer: str,
        max_frame: int,
        max_held: int,
        prompt_acks: bool,
        start: str | None,
    ) -> None:
        """Choose framing, encodings, limits and the ACK policy; open the first connection
        (and with ``start``, run its handshake)."""
        self.framing = framing
        codec = CodecOptions(compress_min_bytes=compress_min)
        self.client_config = ClientConfig(
            format=fmt, compression=compression, force=force, user_id="alice", codec=codec
        )
        self.server_config = ServerConfig(
            prefer="client" if prefer == "client" else "server",
            limits=Limits(max_frame=max_frame, max_held_frames=max_held),
            codec=codec,
        )
        self.prompt_acks = prompt_acks
        self._new_connection(0.0, [])
        if start is not None:
            self.handshake(start, [])

    # -- handshake --------------------------------------------------------------------

    @precondition(lambda self: bool(self.conns and self.pair.client.state is ClientState.IDLE))
    @rule(
        verdict=st.sampled_from(["accept", "accept", "accept", "reject", "timeout", "later"]),
        held=st.lists(st.sampled_from(["send", "data", "custom", "ping"]), max_size=3),
    )
    def handshake(self, verdict: str, held: list[str]) -> None:
        """CONNECT, maybe client frames injected before the verdict (held by the server),
        then accept, reject, no verdict until ``auth_timeout``, or a verdict later."""
        self._guard("connect", self.pair.connect)
        self._settle()
        for kind in held:
            self._inject_client_frame(kind, b"held")
        if verdict == "accept":
            self._accept(())
        elif verdict == "reject":
            self._reject()
        elif verdict == "timeout":
            self.advance(self.server_config.auth_timeout)

    @precondition(
        lambda self: bool(self.conns and self.pair.server.state is ServerState.AWAITING_VERDICT)
    )
    @rule(conflicts=st.sampled_from([(), ("old-1",)]))
    def accept(self, conflicts: tuple[str, ...]) -> None:
        """A late accept of the pending CONNECT."""
        self._accept(conflicts)

    @precondition(
        lambda self: bool(self.conns and self.pair.server.state is ServerState.AWAITING_VERDICT)
    )
    @rule()
    def reject(self) -> None:
        """A late reject of the pending CONNECT."""
        self._reject()

    def _accept(self, conflicts: tuple[str, ...]) -> None:
        pair = self.pair
        server = pair.server
        if server.state is not ServerState.AWAITING_VERDICT:
            self._misuse("accept()", lambda: server.accept(pair.now, user_id="alice"))
            return
        user_id = server.request.user_id if server.request is not None else None
        self.conn.accept_mark = len(pair.server_events)
        self._guard(
            "accept",
            lambda: server.accept(pair.now, user_id=user_id, conflict_connections=conflicts),
        )
        self._settle()

    def _reject(self) -> None:
        pair = self.pair
        server = pair.server
        if server.state is not ServerState.AWAITING_VERDICT:
            self._misuse("reject()", lambda: server.reject(pair.now))
            return
        self.conn.rejected = True
        self._guard("reject", lambda: server.reject(pair.now, "bad token"))
        self._settle()

    @precondition(
        lambda self: bool(
            self.conns
            and self.pair.server.state in (ServerState.AWAITING_VERDICT, ServerState.OPEN)
        )
    )
    @rule(kind=st.sampled_from(["send", "data", "custom", "ping"]), payload=_PAYLOADS)
    def inject_client_frame(self, kind: str, payload: bytes) -> None:
        """A well-formed client frame written straight to the server (as a client that
        does not wait for CONNECT_ACK would): held before the verdict, delivered after."""
        self._inject_client_frame(kind, payload)

    def _inject_client_frame(self, kind: str, payload: bytes) -> None:
        pair = self.pair
        self.serial += 1
        ident = f"held-{self.serial}"
        if kind == "ping":
            frame = system_frame(PING, message_id=ident, timestamp=1)
        elif kind == "custom":
            frame = custom_frame("typing", message_id=ident, timestamp=1, data=payload)
        else:
            frame = message_frame(
                SEND if kind == "send" else DATA, message_id=ident, timestamp=1, payload=payload
            )
        data = encode_frame(frame, pair.client.format)
        if self.framing is Framing.STREAM:
            data = len(data).to_bytes(4, "big") + data
        if kind != "ping" and not pair.server.closed:
            self.conn.expected.append(ident)
        self._inject(data, to_server=True)
        self._settle()

    # -- client sends -----------------------------------------------------------------

    @rule(
        sends=st.lists(
            st.tuples(
                st.sampled_from(["send", "send", "data", "custom", "frame", "duplicate"]),
                _PAYLOADS,
                st.sampled_from([None, {"room": "1"}]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def client_send(self, sends: list[tuple[str, bytes, dict[str, str] | None]]) -> None:
        """The client application sends SENDs (``frame``: built by the caller, through
        ``send_frame``), DATA or custom commands; misuse unless the client is open, or when
        reusing the id of a SEND still awaiting its ACK (``duplicate``)."""
        for kind, payload, metadata in sends:
            self._client_send(kind, payload, metadata)

    def _client_send(self, kind: str, payload: bytes, metadata: dict[str, str] | None) -> None:
        pair = self.pair
        client = pair.client
        now = pair.now

        pending = [ack_id(frame) for frame in client.pending_sends()]
        self.serial += 1
        own_id = f"{self.serial}-own"

        def call() -> str:
            if kind == "send":
                return client.send_message(payload, now, metadata=metadata)
            if kind == "duplicate":
                return client.send_message(payload, now, message_id=pending[0])
            if kind == "frame":
                frame = message_frame(SEND, message_id=own_id, timestamp=1, payload=payload)
                client.send_frame(frame, now)
                return own_id
            if kind == "data":
                return client.send_data(payload, now, metadata=metadata)
            return client.send_custom("echo", payload, now, metadata=metadata)

        if kind == "duplicate":
            # Open, the client's pending_sends() are all tracked (resends went out).
            if self._client_open() and pending:
                self._misuse("send_message() reusing a pending id", call)
            return
        if not self._client_open():
            self._misuse(f"send ({kind}) in {client.state.name}", call)
            return
        ident = self._guard(f"send ({kind})", call)
        conn = self.conn
        if kind in ("send", "frame"):
            if ident in self.send_ids:
                raise ModelViolation(f"message id {ident} reused")
            self.send_ids.add(ident)
            conn.tracked.append(ident)
        conn.expected.append(ident)
        self._settle()

    @rule(background=st.booleans())
    def set_background(self, background: bool) -> None:
        """The client application moves to the background or foreground."""
        pair = self.pair
        self._guard("set_background", lambda: pair.client.set_background(background, pair.now))
        self._settle()

    # -- server application -------------------------------------------------------------

    @precondition(lambda self: bool(self.conns and self.conn.unacked))
    @rule(which=st.integers(0, 7), everything=st.booleans())
    def server_ack(self, which: int, everything: bool) -> None:
        """The server application ACKs every received SEND in order, or one of them out
        of order; late (ACKs are otherwise never sent unless ``prompt_acks``)."""
        pair = self.pair
        conn = self.conn
        chosen = list(conn.unacked) if everything else [conn.unacked[which % len(conn.unacked)]]
        if not self._server_open():
            self._misuse("send_ack()", lambda: pair.server.send_ack(chosen[0], pair.now))
            return
        for ident in chosen:
            conn.unacked.remove(ident)
            self._guard("send_ack", functools.partial(pair.server.send_ack, ident, pair.now))
        self._settle()

    @rule(payload=_PAYLOADS, encoded=st.booleans())
    def server_push(self, payload: bytes, encoded: bool) -> None:
        """The server application pushes a SEND to the client, or a DATA frame encoded
        once and handed over as bytes (``send_encoded``, the broadcast path)."""
        pair = self.pair
        server, now = pair.server, pair.now

        def push() -> None:
            if encoded:
                self.serial += 1
                frame = message_frame(DATA, message_id=f"b-{self.serial}", timestamp=1)
                server.send_encoded(server.encode(frame))
            else:
                server.send_message(payload, now, metadata={"from": "bob"})

        if self._server_open():
            self._guard("server push", push)
        elif not encoded or server.closed:
            # send_encoded is refused only once closed (bytes may be queued before OPEN).
            self._misuse("server push", push)
        self._settle()

    # -- time -------------------------------------------------------------------------

    @rule(seconds=_SECONDS)
    def advance(self, seconds: float) -> None:
        """Move the fake clock; every deadline met on the way fires (invariant 6)."""
        pair = self.pair
        self._guard(f"advance({seconds})", lambda: pair.advance(seconds))
        self._settle()
        for name, side in (("client", pair.client), ("server", pair.server)):
            deadline = side.next_deadline()
            if deadline is not None and deadline <= pair.now:
                raise ModelViolation(
                    f"{name} deadline {deadline} left unfired at {pair.now} after advance"
                )

    # -- hostile input, closes and transport ends -------------------------------------

    @rule(to_server=st.booleans(), data=_GARBAGE, prefixed=st.booleans())
    def inject_garbage(self, to_server: bool, data: bytes, prefixed: bool) -> None:
        """Random or mutated bytes to one side; on a stream, with or without a valid
        length prefix."""
        if self.framing is Framing.STREAM and prefixed:
            data = len(data).to_bytes(4, "big") + data
        conn = self.conn
        if to_server:
            conn.injected_to_server = True
        else:
            conn.injected_to_client = True
        self._inject(data, to_server=to_server)
        self._settle()

    @rule(
        how=st.sampled_from(["kick", "server_close", "client_close", "eof", "transport_close"]),
        code=st.sampled_from(list(CloseCode)),
        to_server=st.booleans(),
        number=_CLOSE_NUMBERS,
    )
    def disconnect(self, how: str, code: CloseCode, to_server: bool, number: int | None) -> None:
        """End the connection: a kick (KICKED notice), a server close with ``code``, a
        normal client close (all misuse once closed), or one side's transport ending
        without (``eof``) or with a close ``number``."""
        pair = self.pair
        client, server, now = pair.client, pair.server, pair.now
        if how in ("eof", "transport_close"):
            side: ConnectionBase = server if to_server else client
            self.conn.transport_cut = True
            if how == "eof":
                self._guard("receive_eof", lambda: side.receive_eof(now))
            else:
                self._guard("receive_close", lambda: side.receive_close(number, "bye", now))
            self._settle()
            return

        def action() -> None:
            if how == "kick":
                server.kick(now, message="another device logged in", metadata=_KICK_METADATA)
            elif how == "server_close":
                server.close(now, code, code.code)
            else:
                client.close(now)

        if (client if how == "client_close" else server).closed:
            self._misuse(how, action)
        else:
            self._guard(how, action)
        self._settle()

    @precondition(
        lambda self: bool(
            self.conns
            and self.pair.client.closed
            and self.pair.server.closed
            and len(self.conns) < MAX_CONNECTIONS
        )
    )
    @rule(verdict=st.sampled_from(["accept", "accept", "reject", "timeout", "later", None]))
    def reconnect(self, verdict: str | None) -> None:
        """A new connection whose client resends what the old one left unacknowledged;
        with a ``verdict``, its handshake follows at once."""
        old = self.pair
        resend = old.client.pending_sends()
        ids = [ack_id(frame) for frame in resend]
        for ident in ids:
            if ident in self.acked:
                raise ModelViolation(f"ACKed SEND {ident} handed to the next connection")
            if ident in self.timed_out:
                raise ModelViolation(f"timed-out SEND {ident} handed to the next connection")
        self._new_connection(old.now, resend)
        self._settle()
        if verdict is not None:
            self.handshake(verdict, [])

    @precondition(
        lambda self: bool(self.conns and self._client_open() and len(self.conns) < MAX_CONNECTIONS)
    )
    @rule(to_server=st.booleans())
    def flap(self, to_server: bool) -> None:
        """The network drops an open connection; the client reconnects at once."""
        pair = self.pair
        side: ConnectionBase = pair.server if to_server else pair.client
        self.conn.transport_cut = True
        self._guard("receive_eof", lambda: side.receive_eof(pair.now))
        self._settle()
        self.reconnect("accept")

    @rule(what=st.sampled_from(["connect", "verdict"]))
    def local_misuse(self, what: str) -> None:
        """Calls that are misuse in the current state raise and change nothing."""
        pair = self.pair
        if what == "connect" and pair.client.state is not ClientState.IDLE:
            self._misuse("connect()", lambda: pair.client.connect(pair.now))
        elif what == "verdict" and pair.server.state is not ServerState.AWAITING_VERDICT:
            self._misuse("accept()", lambda: pair.server.accept(pair.now, user_id="alice"))
            self._misuse("reject()", lambda: pair.server.reject(pair.now))

    # -- observation ------------------------------------------------------------------

    def _observe(self) -> None:
        """Fold new events and written bytes into the model, checking as it goes."""
        for index, conn in enumerate(self.conns, 1):
            self._observe_server(conn, index)
            self._observe_client(conn, index)
            self._observe_sent(conn, index)

    def _closed_check(
        self, event: Event, previous: ConnectionClosed | None, where: str
    ) -> ConnectionClosed | None:
        """Invariant 2 for one event of one side."""
        if previous is not None:
            raise ModelViolation(f"{where}: {event!r} after {previous!r}")
        if isinstance(event, ConnectionClosed):
            if event.code is not None and not isinstance(event.code, CloseCode):
                raise ModelViolation(f"{where}: close code {event.code!r} not in the table")
            return event
        return None

    def _observe_server(self, conn: _Connection, index: int) -> None:
        events = conn.pair.server_events
        where = f"server {index}"
        # Resends join ``expected`` when the client's HandshakeCompleted is observed.
        expected = set(conn.expected) | set(conn.resent)
        for position in range(conn.server_cursor, len(events)):
            event = events[position]
            conn.server_closed = self._closed_check(event, conn.server_closed, where)
            if isinstance(event, ConnectRequested) and any(
                isinstance(e, ConnectRequested) for e in events[:position]
            ):
                raise ModelViolation(f"{where}: second ConnectRequested")
            if not isinstance(event, FrameReceived):
                continue
            # Invariant 3: nothing before accept, nothing after reject.
            if conn.accept_mark is None or position < conn.accept_mark:
                raise ModelViolation(f"{where}: {event.kind} delivered before accept")
            frame = event.frame
            if event.kind in _APP_KINDS and frame.message_id in expected:
                conn.received.append(frame.message_id)
            if event.kind is CommandKind.SEND:
                conn.unacked.append(frame.command.message.message_id)
                ident = ack_id(frame)
                if ident in self.send_ids:
                    self.deliveries[ident] += 1
                    if ident in self.acked:
                        raise ModelViolation(f"{where}: SEND {ident} delivered again after ACK")
        conn.server_cursor = len(events)

    def _observe_client(self, conn: _Connection, index: int) -> None:
        events = conn.pair.client_events
        where = f"client {index}"
        for position in range(conn.client_cursor, len(events)):
            event = events[position]
            conn.client_closed = self._closed_check(event, conn.client_closed, where)
            if isinstance(event, HandshakeCompleted):
                if any(isinstance(e, HandshakeCompleted) for e in events[:position]):
                    raise ModelViolation(f"{where}: second HandshakeCompleted (B33)")
                # Resends go out right after CONNECT_ACK, before any new send.
                conn.expected.extend(conn.resent)
            elif isinstance(event, MessageAcked):
                ident = event.message_id
                if ident not in self.send_ids:
                    raise ModelViolation(f"{where}: ACK for unknown SEND {ident}")
                if ident in self.acked or ident in self.timed_out:
                    raise ModelViolation(f"{where}: second outcome for SEND {ident}")
                if self.deliveries[ident] < 1:
                    raise ModelViolation(f"{where}: SEND {ident} ACKed but never delivered")
                self.acked[ident] = self.deliveries[ident]
            elif isinstance(event, AckTimedOut):
                ident = event.message_id
                if ident in self.acked or ident in self.timed_out or ident not in self.send_ids:
                    raise ModelViolation(f"{where}: unexpected AckTimedOut for {ident}")
                self.timed_out.add(ident)
            elif isinstance(event, Kicked):
                following = events[position + 1 : position + 2]
                if following and not (
                    isinstance(following[0], ConnectionClosed)
                    and following[0].code is CloseCode.KICKED
                ):
                    raise ModelViolation(f"{where}: Kicked not followed by a kicked close")
        conn.client_cursor = len(events)

    def _frames_written(self, chunks: list[bytes], start: int, where: str) -> list[Frame]:
        """Decode ``chunks[start:]``; on a stream they come as (prefix, payload) pairs."""
        frames = []
        step = 2 if self.framing is Framing.STREAM else 1
        for at in range(start, len(chunks) - step + 1, step):
            payload = chunks[at + step - 1]
            if step == 2 and chunks[at] != len(payload).to_bytes(4, "big"):
                raise ModelViolation(f"{where}: bad length prefix {chunks[at]!r}")
            try:
                frame, _, _ = decode_frame(payload)
            except Exception as exc:
                raise ModelViolation(f"{where}: wrote an undecodable frame: {exc!r}") from exc
            frames.append(frame)
        return frames

    def _observe_sent(self, conn: _Connection, index: int) -> None:
        pair = conn.pair
        step = 2 if self.framing is Framing.STREAM else 1
        where = f"server {index}"
        for frame in self._frames_written(pair.server_sent, conn.server_sent_cursor, where):
            conn.last_server_frame = frame
            if frame.command.WhichOneof("type") != "system":
                continue
            system = frame.command.system
            if system.type in (ERROR, CLOSE):
                # Invariant 7: ERROR/CLOSE carry a code from the table.
                raw = system.metadata.get("code")
                if raw is None or CloseCode.from_code(raw.decode("utf-8", "replace")) is None:
                    raise ModelViolation(f"{where}: ERROR/CLOSE without a table code: {frame}")
        conn.server_sent_cursor = len(pair.server_sent) - len(pair.server_sent) % step
        self._frames_written(pair.client_sent, conn.client_sent_cursor, f"client {index}")
        conn.client_sent_cursor = len(pair.client_sent) - len(pair.client_sent) % step

    def teardown(self) -> None:
        """Report what the example reached (``--hypothesis-show-statistics``)."""
        if not self.conns:
            return
        event(f"framing: {self.framing.value}")
        event(f"connections: {len(self.conns)}")
        if any(c.pair.server.state is ServerState.OPEN or c.accept_mark for c in self.conns):
            event("accepted")
        if self.acked:
            event("SEND acked")
        if self.timed_out:
            event("SEND timed out")
        if any(set(c.resent) & set(c.received) for c in self.conns):
            event("resend delivered")
        if any(i.startswith("held-") for c in self.conns for i in c.received):
            event("injected client frame delivered")
        for conn in self.conns:
            if conn.server_closed is not None:
                code = conn.server_closed.code
                by = "peer" if conn.server_closed.by_peer else "self"
                event(f"server closed: {code.code if code else None} by {by}")

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def events_are_consistent(self) -> None:
        """Invariants 2-5 and 7 over everything observed so far."""
        if not self.conns:
            return
        self._observe()
        for index, conn in enumerate(self.conns, 1):
            self._check_connection(conn, index)

    def _check_connection(self, conn: _Connection, index: int) -> None:
        pair = conn.pair
        sides: tuple[tuple[str, ClientConnection | ServerConnection, ConnectionClosed | None], ...]
        sides = (
            ("client", pair.client, conn.client_closed),
            ("server", pair.server, conn.server_closed),
        )
        for name, side, closed in sides:
            where = f"{name} {index}"
            if side.closed != (closed is not None):
                raise ModelViolation(f"{where}: closed={side.closed} but close event {closed!r}")
            if side.closed:
                if side.next_deadline() is not None:
                    raise ModelViolation(f"{where}: closed but has a deadline")
                assert closed is not None
                if closed.code is not side.close_code:
                    raise ModelViolation(f"{where}: event code {closed.code} != {side.close_code}")
            else:
                deadline = side.next_deadline()
                if deadline is not None and deadline < pair.now:
                    raise ModelViolation(f"{where}: deadline {deadline} in the past ({pair.now})")
        # Invariant 3.
        if conn.accept_mark is None and conn.received:
            raise ModelViolation(f"connection {index}: frames delivered without accept")
        # Invariant 4.
        if not _is_subsequence(conn.received, conn.expected):
            raise ModelViolation(
                f"connection {index}: server got {conn.received}, client sent {conn.expected}"
            )
        if not (conn.injected_to_server or conn.injected_to_client):
            if conn.received != conn.expected[: len(conn.received)]:
                raise ModelViolation(
                    f"connection {index}: lost frames: got {conn.received} of {conn.expected}"
                )
            if self._both_open(pair) and conn.received != conn.expected:
                raise ModelViolation(
                    f"connection {index}: undelivered: got {conn.received} of {conn.expected}"
                )
        # Invariant 5: a SEND with no outcome yet is never lost. (Only the latest client:
        # an older one's leftovers were checked when they were handed on, and may since
        # have been ACKed on a later connection.)
        pending = [ack_id(frame) for frame in pair.client.pending_sends()]
        outstanding = [i for i in conn.tracked if i not in self.acked and i not in self.timed_out]
        if conn is self.conn and pending != outstanding:
            raise ModelViolation(
                f"client {index}: pending_sends() {pending} != unresolved {outstanding}"
            )
        for ident, count in self.acked.items():
            if self.deliveries[ident] != count:
                raise ModelViolation(f"SEND {ident} delivered again after its ACK")
        self._check_close_agreement(conn, index)

    @staticmethod
    def _both_open(pair: Loopback) -> bool:
        return pair.client.state is ClientState.OPEN and pair.server.state is ServerState.OPEN

    def _check_close_agreement(self, conn: _Connection, index: int) -> None:
        """The side that closed first and the side that was told agree on the code, and
        the server's last frame says why it closed."""
        server, client = conn.server_closed, conn.client_closed
        if server is not None and not server.by_peer:
            last = conn.last_server_frame
            if server.code is None or last is None:
                raise ModelViolation(f"server {index}: own close without code or frame")
            system = last.command.system
            ok = system.type in (ERROR, CLOSE) and system.metadata.get("code") == (
                server.code.code.encode()
            )
            if server.code is CloseCode.KICKED:
                ok = ok or system.type == KICKED
            if not ok:
                raise ModelViolation(f"server {index}: closed {server.code} after {last}")
        if server is None or client is None or conn.injected_to_client or conn.transport_cut:
            return
        if server.by_peer != client.by_peer and server.code is not client.code:
            raise ModelViolation(f"connection {index}: server closed {server}, client {client}")


def run_model(settings: settings | None = None) -> None:
    """Run :class:`ConnectionPairModel` as a test (``DEFAULT_SETTINGS`` by default); an
    invariant violation raises with hypothesis' minimal failing run."""
    run_state_machine_as_test(ConnectionPairModel, settings=settings or DEFAULT_SETTINGS)
