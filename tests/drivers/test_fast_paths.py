"""The drivers' fast paths give the same results as the slow ones they bypass.

* WebSocket: the data-frame fast path around wsproto (``WebSocketTransport._receive``,
  ``_frames``, ``_mask_frames``) against wsproto itself, whatever the chunking, with
  control frames interleaved, and its hand-over to wsproto for everything else (fragments,
  invalid UTF-8, unmasked client frames) with wsproto's close codes.
* The driver loop: buffered input is taken in bursts, and the writer sends replies while a
  long burst is still being processed.
* QUIC: :class:`~flare_drivers._quic.DatagramSocket` batches datagrams and wakes a waiting
  reader when closed.
"""

from __future__ import annotations

import os
import random
import socket
from typing import Any, cast

import anyio
import pytest
from wsproto import WSConnection
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol

from flare_drivers._clock import now, process_ids
from flare_drivers._loop import _BURST, ConnectionDriver
from flare_drivers._quic import DatagramSocket
from flare_drivers._transport import TransportClosed
from flare_drivers._websocket import WebSocketTransport, _frames, _mask_frames
from flare_proto import (
    ClientConfig,
    ClientConnection,
    Event,
    Format,
    FrameReceived,
    Framing,
    ServerConnection,
)

from .hubtools import ws_pair

SIZES = [0, 1, 3, 4, 5, 125, 126, 127, 300, 65535, 65536, 70000]



def transport(ws: WSConnection, max_message: int = 1 << 20) -> WebSocketTransport:
    # _receive never touches the stream.
    return WebSocketTransport(cast(Any, None), ws, remote="test", max_message=max_message)


def feed(t: WebSocketTransport, wire: bytes, rng: random.Random) -> None:
    pos = 0
    while pos < len(wire):
        n = rng.randint(1, 3000)
        t._receive(wire[pos : pos + n])
        pos += n


@pytest.mark.parametrize("size", SIZES)
def test_written_frames_parse_in_wsproto(size: int) -> None:
    chunks = [os.urandom(size), b"x", os.urandom(size)]
    for data, client in ((_mask_frames(chunks), False), (_frames(chunks), True)):
        proto = FrameProtocol(client=client, extensions=[])  # the receiving side
        proto.receive_bytes(data)
        assert [bytes(f.payload) for f in proto.received_frames()] == chunks


def test_server_fast_path_matches_wsproto_any_chunking() -> None:
    rng = random.Random(7)
    for _ in range(100):
        client, server = ws_pair()
        t = transport(server)
        assert t._fast
        expected: list[bytes] = []
        pings = 0
        wire = b""
        for _ in range(rng.randint(1, 15)):
            r = rng.random()
            if r < 0.6:
                data = os.urandom(rng.choice(SIZES))
                expected.append(data)
                wire += client.send(BytesMessage(data=data))
            elif r < 0.85:
                text = "héllo ✓" * rng.randint(0, 40)
                expected.append(text.encode())
                wire += client.send(TextMessage(data=text))
            else:
                pings += 1
                wire += client.send(Ping(payload=b"p%d" % pings))
        feed(t, wire, rng)
        assert list(t._messages) == expected
        assert len(t._pongs) == pings  # wsproto still answers the Pings
        assert t._fast and t._closed is None


def test_client_fast_path_reads_server_frames() -> None:
    rng = random.Random(8)
    client, server = ws_pair()
    t = transport(client)
    chunks = [os.urandom(rng.choice(SIZES)) for _ in range(30)]
    feed(t, _frames(chunks) + server.send(Ping(payload=b"")), rng)
    assert list(t._messages) == chunks
    assert t._pongs == [b""]


def test_fragmented_message_hands_over_to_wsproto() -> None:
    client, server = ws_pair()
    t = transport(server)
    wire = client.send(BytesMessage(data=b"whole"))
    wire += client.send(BytesMessage(data=b"frag", message_finished=False))
    wire += client.send(BytesMessage(data=b"ment", message_finished=True))
    wire += client.send(BytesMessage(data=b"after"))
    t._receive(wire)
    assert list(t._messages) == [b"whole", b"fragment", b"after"]
    assert not t._fast


@pytest.mark.parametrize(
    ("make", "code"),
    [
        # Invalid UTF-8 in a Text frame: 1007, as wsproto decides.
        (lambda c: b"\x81\x82" + b"\0\0\0\0" + b"\xff\xfe", 1007),
        # An unmasked frame from a client: 1002.
        (lambda c: b"\x82\x02ok", 1002),
    ],
)
def test_violations_get_wsproto_close_codes(make: Any, code: int) -> None:
    client, server = ws_pair()
    t = transport(server)
    t._receive(client.send(BytesMessage(data=b"first")) + make(client))
    assert list(t._messages) == [b"first"]
    assert t._closed == TransportClosed(code, t._closed.reason if t._closed else "")
    assert isinstance(t._close_reply, CloseConnection) and t._close_reply.code == code


def test_oversize_message_is_cut_to_the_limit_plus_one() -> None:
    client, server = ws_pair()
    t = transport(server, max_message=100)
    wire = client.send(BytesMessage(data=b"a" * 100)) + client.send(BytesMessage(data=b"b" * 500))
    t._receive(wire)
    assert list(t._messages) == [b"a" * 100, b"b" * 101]


class BufferedTransport:
    """Holds many messages at once, like a WebSocket read; records what was written
    and how many messages were still unread at that moment."""

    framing = Framing.MESSAGE
    remote = "test"

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.writes: list[tuple[int, int]] = []  # (messages still buffered, chunks)
        self.done = anyio.Event()

    def receive_nowait(self) -> bytes | TransportClosed | None:
        return self.messages.pop(0) if self.messages else None

    async def receive(self) -> bytes | TransportClosed:
        if self.messages:
            return self.messages.pop(0)
        await self.done.wait()
        return TransportClosed(None, "done", half=True)  # we may still write

    async def send(self, chunks: list[bytes]) -> None:
        self.writes.append((len(self.messages), len(chunks)))

    async def aclose(self, number: int | None, reason: str) -> None:
        pass


@pytest.mark.anyio
async def test_replies_go_out_during_a_long_burst() -> None:
    """200 SENDs already buffered: the writer sends ACKs before the last SEND is read,
    every SEND gets its ACK, in order."""
    client = ClientConnection(ClientConfig(format=Format.PROTOBUF), ids=process_ids())
    client.connect(now())
    server = ServerConnection(now=now(), ids=process_ids())
    for data in client.data_to_send():
        server.receive_message(data, now())
    server.events_received()  # ConnectRequested
    server.accept(now(), user_id=None)
    for data in server.data_to_send():
        client.receive_message(data, now())
    sent = [client.send_message(b"m%d" % i, now()) for i in range(200)]
    wire = BufferedTransport(client.data_to_send())
    acked: list[str] = []

    async def on_event(event: Event) -> None:
        if not isinstance(event, FrameReceived):
            return  # the ConnectionClosed at the end
        frame = event.frame
        acked.append(frame.command.message.message_id)
        server.send_ack(frame.command.message.message_id, now())
        driver.flush()
        if len(acked) == len(sent):
            wire.done.set()

    driver = ConnectionDriver(server, cast(Any, wire), on_event)
    with anyio.fail_after(5):
        await driver.run()
    assert acked == sent
    assert sum(chunks for _, chunks in wire.writes) == len(sent)
    assert wire.writes[0][0] >= len(sent) - 2 * _BURST  # the first ACKs left early


@pytest.mark.anyio
async def test_datagram_socket_batches_and_closes() -> None:
    a = DatagramSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = DatagramSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        a.raw.bind(("127.0.0.1", 0))
        b.raw.bind(("127.0.0.1", 0))
        for i in range(10):
            a.send(b"d%d" % i, b.raw.getsockname())
        with anyio.fail_after(5):
            got: list[bytes] = []
            while len(got) < 10:
                got += [data for data, addr in await b.receive(batch=4)]
        assert got == [b"d%d" % i for i in range(10)]

        async def close_soon() -> None:
            await anyio.sleep(0.05)
            b.close()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(close_soon)
                with pytest.raises(anyio.ClosedResourceError):
                    await b.receive()
        b.close()  # idempotent
    finally:
        a.close()
        b.close()
