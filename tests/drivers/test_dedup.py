"""A resent SEND is handled once (docs/decisions.md, "Delivery"): the hub remembers the
SENDs its application handled, by user, device and message id, and ACKs a resend of one
instead of handling it again. Over real loopback sockets, on both backends."""

from __future__ import annotations

import anyio
import pytest

from flare_drivers import Client, Hub, WebSocketTransport, connect_websocket
from flare_drivers._clock import now, process_ids
from flare_drivers._hub import Connection
from flare_drivers._transport import TransportClosed
from flare_proto import (
    ClientConfig,
    ClientConnection,
    CloseCode,
    CommandKind,
    DeviceInfo,
    Event,
    Frame,
    HandshakeCompleted,
    MessageAcked,
    Platform,
    RecentSends,
)

from .hubtools import running, url

pytestmark = pytest.mark.anyio

FAST = {"backoff_base": 0.05, "backoff_cap": 0.2, "quic_verify": False}
PHONE = DeviceInfo(device_id="phone-1", platform=Platform.parse("ios"))


def loses_the_first_ack(hub: Hub, handled: list[bytes]) -> None:
    """A SEND handler that records each call, and the first time closes the connection
    before the hub can ACK: the application has the SEND, its ACK is lost."""

    @hub.router.on(CommandKind.SEND)
    async def record(conn: Connection, frame: Frame) -> None:
        handled.append(frame.command.message.payload)
        if len(handled) == 1:
            conn.close(CloseCode.SERVER_SHUTDOWN, "gone before the ACK")


@pytest.mark.parametrize("kind", ["ws", "quic"])
async def test_lost_ack_resend_is_acked_not_handled_again(kind: str) -> None:
    hub = Hub()
    handled: list[bytes] = []
    loses_the_first_ack(hub, handled)
    config = ClientConfig(user_id="alice", device=PHONE)
    with anyio.fail_after(15):
        async with running(hub, [kind]) as bound, Client([url(bound, kind)], config, **FAST) as c:
            ident = await c.send(b"once", message_id="m-1")  # completes on the resend's ACK
    assert ident == "m-1"
    assert handled == [b"once"]
    recent = hub.recent_sends
    key = RecentSends.fingerprint(("alice", "phone-1"), "m-1", b"once")
    assert recent is not None and key in recent


async def test_anonymous_sender_gets_at_least_once() -> None:
    """No user id, no device id: the resend cannot be told from another client's SEND
    with the same id, so it is handled again rather than risk swallowing one."""
    hub = Hub()
    handled: list[bytes] = []
    loses_the_first_ack(hub, handled)
    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound, Client([url(bound, "ws")], **FAST) as c:
            await c.send(b"twice", message_id="m-1")
    assert handled == [b"twice", b"twice"]


async def test_dedup_off() -> None:
    hub = Hub(dedup=False)
    handled: list[bytes] = []
    loses_the_first_ack(hub, handled)
    config = ClientConfig(user_id="alice")
    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound, Client([url(bound, "ws")], config, **FAST) as c:
            await c.send(b"twice", message_id="m-1")
    assert hub.recent_sends is None
    assert handled == [b"twice", b"twice"]


async def test_same_id_from_another_user_is_not_swallowed() -> None:
    hub = Hub(dedup=RecentSends(capacity=8))
    handled: list[tuple[str | None, bytes]] = []

    @hub.router.on(CommandKind.SEND)
    async def record(conn: Connection, frame: Frame) -> None:
        handled.append((conn.user_id, frame.command.message.payload))

    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound:
            for user in ("alice", "bob"):
                config = ClientConfig(user_id=user)
                async with Client([url(bound, "ws")], config, **FAST) as c:
                    await c.send(user.encode(), message_id="same-id")
    assert handled == [("alice", b"alice"), ("bob", b"bob")]


class RawSession:
    """A client core on a raw WebSocket transport, pumped by hand, so a test can hold
    two connections of one device open at once (a :class:`Client` would close the
    first)."""

    def __init__(self, core: ClientConnection, transport: WebSocketTransport) -> None:
        self.core = core
        self.transport = transport
        self.events: list[Event] = []

    @classmethod
    async def open(cls, address: str, resend: list[Frame] | None = None) -> RawSession:
        config = ClientConfig(user_id="alice", device=PHONE)
        core = ClientConnection(config, ids=process_ids(), resend=resend or ())
        session = cls(core, await connect_websocket(address))
        core.connect(now())
        await session.flush()
        return session

    async def flush(self) -> None:
        out = self.core.data_to_send()
        if out:
            await self.transport.send(out)

    async def until(self, predicate: type) -> Event:
        """Read and answer until an event of type ``predicate`` arrives."""
        while True:
            for event in self.events:
                if isinstance(event, predicate):
                    self.events.remove(event)
                    return event
            data = await self.transport.receive()
            assert not isinstance(data, TransportClosed), data
            self.core.receive_message(data, now())
            self.events.extend(self.core.events_received())
            await self.flush()

    async def aclose(self) -> None:
        await self.transport.aclose(None, "done")


async def resend_during_its_handler(
    address: str, handler_entered: anyio.Event
) -> tuple[RawSession, RawSession]:
    """One device: SEND "once" (id m-1) on a first connection and, once its handler has
    started, a second connection that resends what the first left unacknowledged."""
    old = await RawSession.open(address)
    await old.until(HandshakeCompleted)
    old.core.send_message(b"once", now(), message_id="m-1")
    await old.flush()
    await handler_entered.wait()
    new = await RawSession.open(address, resend=old.core.pending_sends())
    await new.until(HandshakeCompleted)
    return old, new


async def test_resend_while_the_first_handler_runs_waits_for_its_outcome() -> None:
    """The device reconnects while the server still handles the SEND on the old
    connection (not dead yet): the resend waits for that handler, then is ACKed, and the
    application got the SEND once."""
    hub = Hub()
    handled: list[bytes] = []
    entered, release = anyio.Event(), anyio.Event()

    @hub.router.on(CommandKind.SEND)
    async def slow(conn: Connection, frame: Frame) -> None:
        handled.append(frame.command.message.payload)
        entered.set()
        await release.wait()

    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound, anyio.create_task_group() as tg:
            old, new = await resend_during_its_handler(url(bound, "ws"), entered)
            acked = anyio.Event()

            async def wait_ack() -> None:
                await new.until(MessageAcked)
                acked.set()

            tg.start_soon(wait_ack)
            await anyio.sleep(0.2)
            assert not acked.is_set()  # held until the first handler's outcome is known
            release.set()
            await acked.wait()
            await old.aclose()
            await new.aclose()
    assert handled == [b"once"]


async def test_a_failed_handler_leaves_the_send_unhandled() -> None:
    """A handler that raised did not take the SEND (no ACK): its resend is handled."""
    hub = Hub()
    calls: list[bytes] = []

    @hub.router.on(CommandKind.SEND)
    async def flaky(conn: Connection, frame: Frame) -> None:
        calls.append(frame.command.message.payload)
        if len(calls) == 1:
            conn.close(CloseCode.SERVER_SHUTDOWN, "restart")
            raise RuntimeError("application bug")

    config = ClientConfig(user_id="alice")
    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound, Client([url(bound, "ws")], config, **FAST) as c:
            await c.send(b"again", message_id="m-1")
    assert calls == [b"again", b"again"]


async def test_an_id_reused_for_a_new_message_is_handled() -> None:
    """Applications may choose ids (``send(message_id=)``); one reused for a different
    payload is a new message, not a resend: handled and ACKed, never swallowed."""
    hub = Hub()
    handled: list[bytes] = []

    @hub.router.on(CommandKind.SEND)
    async def record(conn: Connection, frame: Frame) -> None:
        handled.append(frame.command.message.payload)

    config = ClientConfig(user_id="alice", device=PHONE)
    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound, Client([url(bound, "ws")], config, **FAST) as c:
            await c.send(b"order 1 created", message_id="order-1")
            await c.send(b"order 1 paid", message_id="order-1")
    assert handled == [b"order 1 created", b"order 1 paid"]


async def test_a_resend_stops_waiting_for_a_stuck_handler() -> None:
    """The first connection's handler never finishes: the resend on the new connection
    waits ``resend_wait``, then is handled itself (at-least-once, as without
    de-duplication) instead of being held behind the stuck one for good."""
    hub = Hub(resend_wait=0.3)
    handled: list[str] = []
    stuck = anyio.Event()

    @hub.router.on(CommandKind.SEND)
    async def first_one_hangs(conn: Connection, frame: Frame) -> None:
        handled.append(conn.id)
        if len(handled) == 1:
            stuck.set()
            await anyio.sleep_forever()

    with anyio.fail_after(15):
        async with running(hub, ["ws"]) as bound:
            old, new = await resend_during_its_handler(url(bound, "ws"), stuck)
            await new.until(MessageAcked)
            await old.aclose()
            await new.aclose()
    assert len(handled) == 2 and handled[0] != handled[1]
