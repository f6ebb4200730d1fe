"""Edge cases of the driver fast paths: the WebSocket data-frame fast path, the
pending-list writer with burst reads, and the QUIC datagram socket.

Bugs a review found in them (fixed; these tests failed on the commit that introduced
the fast paths, 8ffed66):

* a peer's FIN while the fast path holds the start of a frame makes ``aclose`` raise
  wsproto's LocalProtocolError: the driver's ``run`` raises, the stream is left open and
  a ``Client`` dies instead of reconnecting;
* payload lengths that are not minimally encoded (RFC 6455 §5.2) are accepted;
* data frames after a control frame wsproto rejects are still delivered;
* bytes after the upgrade request are fast-parsed even when the fast path is off.

The rest guard behaviour that is correct and easy to break: frames split at every byte,
the hand-over to wsproto, frames after the upgrade request, the writer's ordering and
accounting, timers during a burst that never waits, and QUIC refusals on both backends.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

import flare_drivers._websocket as websocket
from flare_drivers import Client, ConnectionState
from flare_drivers._clock import now, process_ids
from flare_drivers._loop import ConnectionDriver
from flare_drivers._quic_client import connect_quic
from flare_drivers._transport import TransportClosed
from flare_drivers._websocket import (
    WebSocketTransport,
    _frames,
    connect_websocket,
    serve_websocket,
)
from flare_proto import (
    ClientConfig,
    ClientConnection,
    ClientState,
    CloseCode,
    ConnectRequested,
    Format,
    FrameReceived,
    Framing,
    MessageAcked,
    PongReceived,
    ServerConnection,
    decode_frame,
    message_frame,
)
from flare_proto import (
    Event as CoreEvent,
)
from flare_proto._frames import DATA, KICKED, PING, SEND

from .hubtools import ws_pair

pytestmark = pytest.mark.anyio

KEY = b"\x11\x22\x33\x44"



def masked(payload: bytes, key: bytes = KEY) -> bytes:
    """``key`` then ``payload`` masked with it (RFC 6455 §5.3)."""
    return key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))



class FakeStream:
    """A byte stream that returns ``reads`` one per receive, then EOF; records sends."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)
        self.sent: list[bytes] = []

    eof = True  # False: block once the reads are used up

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if not self.reads:
            if not self.eof:
                await anyio.sleep_forever()
            raise anyio.EndOfStream
        return self.reads.pop(0)

    async def send(self, data: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        self.sent.append(data)

    async def aclose(self) -> None:
        pass


def over(stream: FakeStream, ws: WSConnection, **options: Any) -> WebSocketTransport:
    return WebSocketTransport(cast(Any, stream), ws, remote="test", **options)


async def drain(t: WebSocketTransport) -> list[bytes | TransportClosed]:
    """Every item ``receive`` returns, up to and including the close."""
    items: list[bytes | TransportClosed] = []
    with anyio.fail_after(5):
        while not items or not isinstance(items[-1], TransportClosed):
            items.append(await t.receive())
    return items


def close_codes(sent: list[bytes], *, client: bool) -> list[int]:
    """Close codes in what a transport wrote (parsed by a wsproto peer)."""
    peer_client, peer_server = ws_pair()
    peer = peer_server if client else peer_client
    peer.receive_data(b"".join(sent))
    return [int(e.code) for e in peer.events() if isinstance(e, CloseConnection)]


# -- bugs: RFC 6455 violations the fast path accepts ------------------------------------------

# (extended length field, payload): each length is encoded in more bytes than needed, which
# RFC 6455 §5.2 forbids ("the minimal number of bytes MUST be used") and wsproto rejects.
NON_MINIMAL = {
    "126-for-5": (b"\x7e" + (5).to_bytes(2, "big"), b"hello"),
    "127-for-5": (b"\x7f" + (5).to_bytes(8, "big"), b"hello"),
    "127-for-300": (b"\x7f" + (300).to_bytes(8, "big"), b"x" * 300),
}


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("case", list(NON_MINIMAL))
async def test_non_minimal_payload_length_is_a_protocol_error(side: str, case: str) -> None:
    length, payload = NON_MINIMAL[case]
    client, server = ws_pair()
    if side == "server":  # a client's frame: masked
        wire = b"\x82" + bytes([length[0] | 0x80]) + length[1:] + masked(payload)
        stream, ws = FakeStream([wire]), server
    else:  # a server's frame: unmasked
        wire = b"\x82" + length + payload
        stream, ws = FakeStream([wire]), client
    t = over(stream, ws)
    items = await drain(t)
    assert items == [TransportClosed(1002, cast(TransportClosed, items[-1]).reason)]
    assert close_codes(stream.sent, client=side == "client") == [1002]


async def test_no_data_is_delivered_after_a_control_frame_protocol_error() -> None:
    """A Ping whose length is not minimally encoded is a protocol error wsproto reports
    (1002); the data frames after it in the same read must not reach the application
    (wsproto stops parsing there; the fast path goes on)."""
    client, server = ws_pair()
    bad_ping = b"\x89\xfe" + (2).to_bytes(2, "big") + masked(b"pp")
    after = client.send(BytesMessage(data=b"after"))
    later = client.send(BytesMessage(data=b"later"))
    stream = FakeStream([bad_ping + after, later])
    t = over(stream, server)
    items = await drain(t)
    assert [i for i in items if isinstance(i, bytes)] == []
    assert isinstance(items[-1], TransportClosed) and items[-1].number == 1002


async def test_server_closes_1002_on_a_non_minimal_length_over_loopback() -> None:
    """The same violation on a real connection (then a normal Close in the same write):
    the server must answer with Close 1002 and deliver nothing, as before the fast path;
    with it the handler gets b"hello" and the peer's 1000 is simply echoed."""
    seen: list[bytes | TransportClosed] = []
    wire = b"\x82\xfe" + (5).to_bytes(2, "big") + masked(b"hello")
    with anyio.fail_after(5):
        async with serving(partial(record, seen)) as address:
            stream, ws = await raw_client(address)
            await stream.send(wire + masked_close(1000))
            events = await raw_until(stream, ws, CloseConnection)
            await stream.aclose()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1002
    assert [i for i in seen if isinstance(i, bytes)] == []


def masked_close(code: int) -> bytes:
    return b"\x88\x82" + masked(code.to_bytes(2, "big"))


async def test_initial_bytes_are_not_fast_parsed_when_the_fast_path_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``_wsproto_idle`` answers False when wsproto's private state changes shape, and
    then "wsproto simply does all the parsing". The bytes that followed the upgrade
    request are fast-parsed anyway: a partial frame among them is held back and wsproto
    later gets the rest of that frame without its start."""
    monkeypatch.setattr(websocket, "_wsproto_idle", lambda ws: False)
    client, server = ws_pair()
    wire = client.send(BytesMessage(data=b"0123456789"))
    t = over(FakeStream([wire[3:]]), server, initial=wire[:3])
    assert not t._fast
    assert (await drain(t))[0] == b"0123456789"


@pytest.mark.parametrize("side", ["server", "client"])
async def test_eof_inside_a_frame_then_aclose_does_not_raise(side: str) -> None:
    """The peer's FIN arrives while the fast path holds the start of a frame: receive()
    reports the close (1006 → no code), then aclose(), "never raises", raises wsproto's
    LocalProtocolError ("Connection already closed.") and never closes the stream."""
    client, server = ws_pair()
    sender, ws = (client, server) if side == "server" else (server, client)
    wire = sender.send(BytesMessage(data=b"x" * 300))
    stream = FakeStream([wire[:10]])
    closed: list[bool] = []
    stream.aclose = partial(_mark, closed)  # type: ignore[method-assign]
    t = over(stream, ws, close_timeout=0.2)
    assert await drain(t) == [TransportClosed(None, "")]
    await t.aclose(None, "")
    assert closed == [True]


async def _mark(closed: list[bool]) -> None:
    closed.append(True)


async def test_driver_survives_a_peer_that_drops_mid_frame_over_loopback() -> None:
    """A real server connection: the client sends half a SEND and closes its socket
    (a crash, a killed process). The driver must end with the core closed, not raise
    out of run() (which the hub logs as a handler failure and a Client propagates,
    ending its reconnect loop)."""
    outcome: list[object] = []
    done = anyio.Event()

    async def serve(transport: WebSocketTransport) -> None:
        core = ServerConnection(now=now(), ids=process_ids())

        async def on_event(event: CoreEvent) -> None:
            if isinstance(event, ConnectRequested):
                core.accept(now(), user_id=None)
                driver.flush()

        driver = ConnectionDriver(core, transport, on_event)
        try:
            await driver.run()
            outcome.append(core.closed)
        except Exception as exc:
            outcome.append(exc)
        finally:
            done.set()

    c = ClientConnection(ClientConfig(format=Format.PROTOBUF), ids=process_ids())
    with anyio.fail_after(10):
        async with serving(serve) as address:
            stream, ws = await raw_client(address)
            c.connect(now())
            await stream.send(ws.send(BytesMessage(data=c.data_to_send()[0])))
            ack = (await raw_until(stream, ws, BytesMessage))[-1]  # CONNECT_ACK
            assert isinstance(ack, BytesMessage)
            c.receive_message(bytes(ack.data), now())
            c.send_message(b"y" * 1000, now())
            await stream.send(ws.send(BytesMessage(data=c.data_to_send()[0]))[:500])
            await anyio.sleep(0.05)
            await stream.aclose()
            await done.wait()
    assert outcome == [True]


async def test_client_reconnects_after_the_server_drops_mid_frame() -> None:
    """The server goes away (FIN) in the middle of a message it was sending: the Client
    must reconnect (DESIGN §5), not die with wsproto's LocalProtocolError."""
    attempts = 0

    async def serve(transport: WebSocketTransport) -> None:
        nonlocal attempts
        attempts += 1
        core = ServerConnection(now=now(), ids=process_ids())
        item = await transport.receive()
        assert isinstance(item, bytes)
        core.receive_message(item, now())
        core.events_received()
        core.accept(now(), user_id=None)
        await transport.send(core.data_to_send())
        if attempts == 1:
            # The start of a 256-byte Binary message, then the server is gone.
            await transport._stream.send(b"\x82\x7e\x01\x00" + bytes(10))
            await anyio.aclose_forcefully(transport._stream)
            return
        while not isinstance(await transport.receive(), TransportClosed):
            pass

    url = "ws://{}/"
    with anyio.fail_after(10):
        async with (
            serving(serve) as address,
            Client([url.format(address)], backoff_base=0.01) as client,
        ):
            await wait_for(lambda: attempts == 2 and client.state is ConnectionState.CONNECTED)


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


# -- guards: the WebSocket fast path ------------------------------------------------------


def mixed_wire(sender: WSConnection, sizes: list[int]) -> tuple[bytes, list[bytes], int]:
    """Binary and Text messages of ``sizes`` with a Ping before every other one."""
    wire, expected, pings = b"", [], 0
    for i, size in enumerate(sizes):
        if i % 2:
            pings += 1
            wire += sender.send(Ping(payload=b"p%d" % i))
        if i % 3 == 1:
            text = ("é" * size)[: size // 2] or "t"
            wire += sender.send(TextMessage(data=text))
            expected.append(text.encode())
        else:
            data = os.urandom(size)
            wire += sender.send(BytesMessage(data=data))
            expected.append(data)
    return wire, expected, pings


SPLIT_SIZES = [0, 1, 4, 125, 126, 127, 300, 65535, 65536, 70000]


@pytest.mark.parametrize("side", ["server", "client"])
def test_byte_at_a_time_matches_whole(side: str) -> None:
    """Every split point (inside headers, extended lengths, masking keys, payloads)."""
    client, server = ws_pair()
    sender, receiver = (client, server) if side == "server" else (server, client)
    wire, expected, pings = mixed_wire(sender, SPLIT_SIZES)
    t = over(FakeStream([]), receiver)
    for i in range(len(wire)):
        t._receive(wire[i : i + 1])
    assert list(t._messages) == expected
    assert len(t._pongs) == pings
    assert t._fast and t._closed is None and not t._rx


@pytest.mark.parametrize("side", ["server", "client"])
def test_two_reads_split_at_every_header_position(side: str) -> None:
    client, server = ws_pair()
    sender, receiver = (client, server) if side == "server" else (server, client)
    for size in (5, 126, 65536):
        first = sender.send(BytesMessage(data=b"a" * size))
        wire = first + sender.send(BytesMessage(data=b"z" * 3))
        for cut in range(1, 20):
            t = over(FakeStream([]), receiver)
            t._receive(wire[:cut])
            t._receive(wire[cut:])
            assert list(t._messages) == [b"a" * size, b"zzz"], (size, cut)


def test_client_rejects_a_masked_server_frame() -> None:
    client, _ = ws_pair()
    t = over(FakeStream([]), client)
    t._receive(_frames([b"ok"]) + b"\x82\x82" + masked(b"no"))
    assert list(t._messages) == [b"ok"]
    assert t._closed is not None and t._closed.number == 1002


def test_fragmented_text_with_utf8_split_across_fragments() -> None:
    client, server = ws_pair()
    t = over(FakeStream([]), server)
    text = "aé€𝄞z".encode()
    wire = b"".join(
        [
            b"\x01" + bytes([0x80 | 2]) + masked(text[:2]),  # "a" + half of "é"
            b"\x00" + bytes([0x80 | 4]) + masked(text[2:6]),  # rest of é, most of €
            b"\x80" + bytes([0x80 | (len(text) - 6)]) + masked(text[6:]),
        ]
    )
    t._receive(client.send(BytesMessage(data=b"before")) + wire)
    assert list(t._messages) == [b"before", text]
    assert t._closed is None


async def test_rsv_bits_and_reserved_opcodes_are_wsprotos_errors() -> None:
    for first in (0xC2, 0xA2, 0x92, 0x83, 0x8B, 0x80):  # RSV1/2/3, opcodes 3 and 0xB, CONT
        client, server = ws_pair()
        stream = FakeStream(
            [client.send(BytesMessage(data=b"ok")) + bytes([first, 0x82]) + masked(b"no")]
        )
        items = await drain(over(stream, server))
        assert items[0] == b"ok"
        assert isinstance(items[-1], TransportClosed) and items[-1].number == 1002, hex(first)
        assert len(items) == 2


async def test_oversize_single_frame_and_64_bit_length() -> None:
    client, server = ws_pair()
    huge = b"\x82\xff" + (1 << 63 | 5).to_bytes(8, "big") + masked(b"hello")
    stream = FakeStream([client.send(BytesMessage(data=b"m" * 50)) + huge])
    items = await drain(over(stream, server, max_message=40))
    assert items[0] == b"m" * 41  # max+1: the core closes with frame_too_large
    assert isinstance(items[-1], TransportClosed) and items[-1].number == 1002


async def test_partial_frame_then_aclose_runs_the_closing_handshake() -> None:
    """aclose() while a partial frame is held (connection still open): the held bytes go
    to wsproto and our Close goes out."""
    client, server = ws_pair()
    wire = client.send(BytesMessage(data=b"x" * 300))
    stream = FakeStream([wire[:6]])
    stream.eof = False  # then block, as an open connection does
    t = over(stream, server, close_timeout=0.2)
    with anyio.move_on_after(0.05):
        await t.receive()
    assert t._rx
    await t.aclose(4010, "server_shutdown")
    assert close_codes(stream.sent, client=False) == [4010]


async def record(seen: list[bytes | TransportClosed], transport: WebSocketTransport) -> None:
    while True:
        item = await transport.receive()
        seen.append(item)
        if isinstance(item, TransportClosed):
            return


@asynccontextmanager
async def serving(handler: Any, **options: Any) -> AsyncIterator[str]:
    async with anyio.create_task_group() as tg:
        address: str = await tg.start(partial(serve_websocket, handler, **options))
        yield address
        tg.cancel_scope.cancel()


async def raw_client(
    address: str, extra: bytes = b""
) -> tuple[anyio.abc.SocketStream, WSConnection]:
    host, port = address.rsplit(":", 1)
    stream = await anyio.connect_tcp(host, int(port))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send(ws.send(Request(host=address, target="/")) + extra)
    await raw_until(stream, ws, AcceptConnection)
    return stream, ws


async def raw_until(
    stream: anyio.abc.ByteStream, ws: WSConnection, kind: type[Event]
) -> list[Event]:
    seen: list[Event] = []
    while True:
        for event in ws.events():
            seen.append(event)
            if isinstance(event, kind):
                return seen
        ws.receive_data(await stream.receive())


async def test_frames_in_the_upgrade_read_and_close_after_data() -> None:
    """Frames sent with the upgrade request (one of them split across writes), data then
    a Close in one write: all data is delivered, then the close, and the peer gets the
    Close reply."""
    seen: list[bytes | TransportClosed] = []
    # The raw client masks with wsproto; its frames are built before the handshake.
    builder, _ = ws_pair()
    first = builder.send(BytesMessage(data=b"early"))
    split = builder.send(BytesMessage(data=b"s" * 200))
    tail = b"".join(builder.send(BytesMessage(data=b"%d" % i)) for i in range(3))
    with anyio.fail_after(10):
        async with serving(partial(record, seen)) as address:
            stream, ws = await raw_client(address, first + split[:5])
            await anyio.sleep(0.02)
            await stream.send(split[5:] + tail + builder.send(CloseConnection(code=1000)))
            events = await raw_until(stream, ws, CloseConnection)
            await stream.aclose()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1000
    assert seen == [b"early", b"s" * 200, b"0", b"1", b"2", TransportClosed(1000, "")]


async def test_ping_answered_between_fast_path_messages() -> None:
    seen: list[bytes | TransportClosed] = []
    with anyio.fail_after(10):
        async with serving(partial(record, seen)) as address:
            stream, ws = await raw_client(address)
            out = ws.send(BytesMessage(data=b"a")) + ws.send(Ping(payload=b"?"))
            await stream.send(out + ws.send(BytesMessage(data=b"b")))
            assert (await raw_until(stream, ws, Pong))[-1] == Pong(payload=b"?")
            await stream.send(ws.send(CloseConnection(code=1000)))
            await raw_until(stream, ws, CloseConnection)
            await stream.aclose()
    assert seen == [b"a", b"b", TransportClosed(1000, "")]


# -- guards: the driver loop's writer and burst reads -----------------------------------------


def accepted_pair(
    config: ClientConfig | None = None,
) -> tuple[ClientConnection, ServerConnection]:
    client = ClientConnection(config or ClientConfig(format=Format.PROTOBUF), ids=process_ids())
    client.connect(now())
    server = ServerConnection(now=now(), ids=process_ids())
    for data in client.data_to_send():
        server.receive_message(data, now())
    server.events_received()
    server.accept(now(), user_id=None)
    for data in server.data_to_send():
        client.receive_message(data, now())
    client.events_received()
    return client, server


class SlowWire:
    """A transport whose writes take a while (so flushes from other tasks pile up while
    one is in progress); input ends when ``done`` is set."""

    framing = Framing.MESSAGE
    remote = "test"

    def __init__(self, delay: float = 0.002) -> None:
        self.delay = delay
        self.written: list[bytes] = []
        self.writes = 0
        self.in_send = False
        self.done = anyio.Event()
        self.closed_with: tuple[int | None, str] | None = None

    async def receive(self) -> bytes | TransportClosed:
        await self.done.wait()
        return TransportClosed(None, "done", half=True)

    async def send(self, chunks: list[bytes]) -> None:
        assert not self.in_send  # one writer
        self.in_send = True
        try:
            await anyio.sleep(self.delay)
            self.written += chunks
            self.writes += 1
        finally:
            self.in_send = False

    async def aclose(self, number: int | None, reason: str) -> None:
        self.closed_with = (number, reason)


def payloads(chunks: list[bytes]) -> list[bytes]:
    return [decode_frame(c)[0].command.message.payload for c in chunks]


async def test_flushes_from_many_tasks_during_writes_keep_order_and_bytes() -> None:
    _, server = accepted_pair()
    wire = SlowWire()

    async def ignore(event: CoreEvent) -> None:
        pass

    driver = ConnectionDriver(server, cast(Any, wire), ignore, max_queue=10_000)

    async def producer(tag: int) -> None:
        for i in range(50):
            server.send_message(b"%d-%d" % (tag, i), now())
            driver.flush()
            if i % 7 == 0:
                await anyio.sleep(0)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.run)
            async with anyio.create_task_group() as producers:
                for tag in range(4):
                    producers.start_soon(producer, tag)
            server.close(now())
            driver.flush()
    got = payloads(wire.written[:-1])
    for tag in range(4):
        mine = [p for p in got if p.startswith(b"%d-" % tag)]
        assert mine == [b"%d-%d" % (tag, i) for i in range(50)]
    assert len(got) == 200
    last = decode_frame(wire.written[-1])[0]
    assert last.command.WhichOneof("type") == "system"  # the CLOSE went out last
    assert driver._queued_bytes == 0 and not driver._pending
    assert wire.writes < 200  # coalesced
    assert wire.closed_with is not None and wire.closed_with[0] == CloseCode.SERVER_SHUTDOWN.number


async def test_queue_bound_closes_slow_consumer_without_waiting() -> None:
    _, server = accepted_pair()
    wire = SlowWire(delay=3600)  # the peer never reads: the first write never ends

    async def ignore(event: CoreEvent) -> None:
        pass

    driver = ConnectionDriver(server, cast(Any, wire), ignore, max_queue=8)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.run)
            await anyio.sleep(0.01)
            for i in range(20):
                if server.closed:
                    break
                server.send_message(b"%d" % i, now())
                driver.flush()
                await anyio.sleep(0)
    assert server.close_code is CloseCode.SLOW_CONSUMER
    assert wire.closed_with == (CloseCode.SLOW_CONSUMER.number, CloseCode.SLOW_CONSUMER.code)


async def test_kicked_is_the_last_frame_when_kicked_during_a_burst() -> None:
    client, server = accepted_pair()
    for i in range(300):
        client.send_data(b"d%d" % i, now())
    inbound = client.data_to_send()
    wire = BurstWire(inbound)
    delivered: list[bytes] = []

    async def on_event(event: CoreEvent) -> None:
        if isinstance(event, FrameReceived):
            delivered.append(event.frame.command.message.payload)
            server.send_message(b"echo", now())
            driver.flush()
            if len(delivered) == 100:
                kicker.start_soon(kick)

    async def kick() -> None:
        server.kick(now(), message="bye", metadata={"reason": "server_kick"})
        driver.flush()

    driver = ConnectionDriver(server, cast(Any, wire), on_event)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as kicker:
            await driver.run()
    frames = [decode_frame(c)[0] for c in wire.written]
    assert frames[-1].command.system.type == KICKED
    assert all(f.command.message.payload == b"echo" for f in frames[:-1])
    assert len(frames) - 1 == len(delivered) < 300
    assert wire.closed_with is not None and wire.closed_with[0] == CloseCode.KICKED.number


class BurstWire:
    """Every message is already buffered (``receive_nowait`` never says "wait") until
    the list runs out; records writes."""

    framing = Framing.MESSAGE
    remote = "test"

    def __init__(self, messages: list[bytes], *, forever: Callable[[], bytes] | None = None):
        self.messages = list(messages)
        self.forever = forever
        self.written: list[bytes] = []
        self.closed_with: tuple[int | None, str] | None = None

    def receive_nowait(self) -> bytes | None:
        if self.forever is not None:
            return self.forever()
        return self.messages.pop(0) if self.messages else None

    async def receive(self) -> bytes | TransportClosed:
        item = self.receive_nowait()
        if item is not None:
            return item
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(self, chunks: list[bytes]) -> None:
        await anyio.lowlevel.checkpoint()
        self.written += chunks

    async def aclose(self, number: int | None, reason: str) -> None:
        self.closed_with = (number, reason)


async def test_heartbeat_fires_during_a_burst_that_never_waits() -> None:
    """The transport always has another message buffered: the client's PING timer must
    still fire (every _BURST messages), and the PONGs it gets count."""
    client, server = accepted_pair(ClientConfig(format=Format.PROTOBUF, heartbeat_interval=0.01))
    data = message_frame(DATA, message_id="x", timestamp=0, payload=b"flood")
    flood = server.encode(data)
    pongs: list[PongReceived] = []
    wire: BurstWire

    def next_message() -> bytes:
        # Answer each PING the client wrote with a PONG in the stream.
        for chunk in wire.written:
            frame = decode_frame(chunk)[0]
            if frame.command.system.type == PING:
                server.receive_message(chunk, now())
        wire.written.clear()
        out = server.data_to_send()
        return out[0] if out else flood

    wire = BurstWire([], forever=next_message)

    async def on_event(event: CoreEvent) -> None:
        if isinstance(event, PongReceived):
            pongs.append(event)
            if len(pongs) == 3:
                client.close(now())
                driver.flush()

    driver = ConnectionDriver(client, cast(Any, wire), on_event)
    with anyio.fail_after(5):
        await driver.run()
    assert len(pongs) == 3


async def test_sends_in_one_write_are_all_acked_in_order_over_loopback() -> None:
    """300 SENDs in one masked write to a real server core: every ACK, in order."""

    async def serve(transport: WebSocketTransport) -> None:
        core = ServerConnection(now=now(), ids=process_ids())

        async def on_event(event: CoreEvent) -> None:
            if isinstance(event, ConnectRequested):
                core.accept(now(), user_id=None)
            elif isinstance(event, FrameReceived) and event.frame.command.message.type == SEND:
                core.send_ack(event.frame.command.message.message_id, now())
            driver.flush()

        driver = ConnectionDriver(core, transport, on_event)
        await driver.run()

    c = ClientConnection(ClientConfig(format=Format.PROTOBUF), ids=process_ids())
    acked: list[str] = []
    with anyio.fail_after(10):
        async with serving(serve) as address:
            t = await connect_websocket(f"ws://{address}/")
            c.connect(now())
            await t.send(c.data_to_send())
            while not isinstance(item := await t.receive(), TransportClosed):
                c.receive_message(item, now())
                if c.state is ClientState.OPEN:
                    break
            sent = [c.send_message(b"%d" % i, now()) for i in range(300)]
            await t.send(c.data_to_send())  # one write
            while len(acked) < len(sent):
                item = await t.receive()
                assert isinstance(item, bytes), item
                c.receive_message(item, now())
                acked += [e.message_id for e in c.events_received() if isinstance(e, MessageAcked)]
            await t.aclose(None, "")
    assert acked == sent


# -- guards: QUIC -------------------------------------------------------------------------------


async def test_quic_port_unreachable_is_refused_fast() -> None:
    """The connected DatagramSocket surfaces the ICMP refusal on both backends."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(3), pytest.raises(ConnectionRefusedError):
        await connect_quic(f"quic://127.0.0.1:{port}", verify=False, connect_timeout=2.0)
