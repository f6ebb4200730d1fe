"""Hub.broadcast on loopback, on asyncio and trio: one serialization per encoding, the same
bytes handed to every connection of that encoding, each client decoding the frame in its
own negotiated encoding, per-connection order, and who is skipped (excluded, not accepted,
closed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from flare_drivers._client import Client
from flare_drivers._hub import Accept, Hub
from flare_proto import (
    ClientConfig,
    Compression,
    ConnectRequest,
    Format,
    Frame,
    FrameReceived,
    ServerConnection,
    message_frame,
)
from flare_proto._frames import SEND

from .hubtools import running, url, wait_for

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {
    "race_stagger": 0.25,
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
    "quic_verify": False,
}
# Above compress_min_bytes, so the compressed encodings really compress.
PAYLOAD = bytes(range(256)) * 2


def frame(ident: str, payload: bytes = PAYLOAD) -> Frame:
    return message_frame(SEND, message_id=ident, timestamp=1, payload=payload)


async def received(client: Client, count: int, timeout: float = 10.0) -> list[Frame]:
    """The next ``count`` frames the client receives (bounded)."""
    frames: list[Frame] = []
    with anyio.fail_after(timeout):
        async for event in client:
            if isinstance(event, FrameReceived):
                frames.append(event.frame)
                if len(frames) == count:
                    return frames
    raise AssertionError(f"client ended after {len(frames)} of {count} frames")


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[object, int]]]:
    """Records every ``ServerConnection.encode`` call (encoding, id of the bytes) and the
    id of the bytes each ``send_encoded`` got, in one list of ``(tag, id)``."""
    calls: list[tuple[object, int]] = []
    encode, send_encoded = ServerConnection.encode, ServerConnection.send_encoded

    def spy_encode(self: ServerConnection, frame: Frame) -> bytes:
        data = encode(self, frame)
        calls.append(((self.format, self.compression), id(data)))
        return data

    def spy_send(self: ServerConnection, data: bytes) -> None:
        calls.append(("sent", id(data)))
        send_encoded(self, data)

    monkeypatch.setattr(ServerConnection, "encode", spy_encode)
    monkeypatch.setattr(ServerConnection, "send_encoded", spy_send)
    yield calls


async def test_broadcast_encodes_once_per_encoding_and_shares_the_bytes(
    encodings: list[tuple[object, int]],
) -> None:
    hub = Hub()
    configs = [
        ClientConfig(user_id="pb1", format=Format.PROTOBUF),
        ClientConfig(user_id="pb2", format=Format.PROTOBUF),
        ClientConfig(user_id="pb3", format=Format.PROTOBUF),
        ClientConfig(user_id="js1", format=Format.JSON),
        ClientConfig(user_id="js2", format=Format.JSON),
        ClientConfig(user_id="zs1", format=Format.PROTOBUF, compression=Compression.ZSTD),
        ClientConfig(user_id="gz1", format=Format.JSON, compression=Compression.GZIP),
    ]
    with anyio.fail_after(30):
        async with running(hub, ["ws", "quic"]) as bound:
            clients = [
                Client([url(bound, "ws" if i % 2 else "quic")], config, **FAST)
                for i, config in enumerate(configs)
            ]
            async with contextlib.AsyncExitStack() as stack:
                for client in clients:
                    await stack.enter_async_context(client)
                for client in clients:
                    await client.wait_connected()
                (excluded,) = [c for c in hub.accepted() if c.user_id == "pb3"]
                encodings.clear()
                assert hub.broadcast(frame("b-1"), exclude=excluded.id) == len(clients) - 1
                encoded = {tag: ident for tag, ident in encodings if tag != "sent"}
                sent = [ident for tag, ident in encodings if tag == "sent"]
                # One serialization per distinct encoding, each one's bytes reused.
                assert len(encoded) == 4 and len(encodings) == 4 + len(clients) - 1
                assert sorted(sent) == sorted(
                    [encoded[Format.PROTOBUF, Compression.NONE]] * 2
                    + [encoded[Format.JSON, Compression.NONE]] * 2
                    + [encoded[Format.PROTOBUF, Compression.ZSTD]]
                    + [encoded[Format.JSON, Compression.GZIP]]
                )
                for client, config in zip(clients, configs, strict=True):
                    if config.user_id == "pb3":
                        continue
                    (got,) = await received(client, 1)
                    assert got.message_id == "b-1"
                    assert got.command.message.payload == PAYLOAD
                # The excluded connection got nothing: the next frame it sees is this one.
                excluded.send_frame(frame("direct"))
                (got,) = await received(clients[2], 1)
                assert got.message_id == "direct"


async def test_broadcast_keeps_each_connections_order() -> None:
    hub = Hub()
    with anyio.fail_after(20):
        async with running(hub, ["ws", "quic"]) as bound:
            a = Client([url(bound, "ws")], ClientConfig(format=Format.PROTOBUF), **FAST)
            b = Client([url(bound, "quic")], ClientConfig(format=Format.JSON), **FAST)
            async with a, b:
                await a.wait_connected()
                await b.wait_connected()
                sent: list[str] = []
                for i in range(40):
                    # Broadcasts interleaved with direct sends, with and without a yield
                    # between them: each client must see them in exactly this order.
                    hub.broadcast(frame(f"b-{i}", b"x" * i))
                    sent.append(f"b-{i}")
                    for conn in hub.accepted():
                        conn.send_frame(frame(f"d-{i}", b"y"))
                    sent.append(f"d-{i}")
                    if i % 3 == 0:
                        await anyio.sleep(0)
                for client in (a, b):
                    got = await received(client, len(sent))
                    assert [f.message_id for f in got] == sent


async def test_broadcast_skips_connections_not_accepted_or_closed() -> None:
    release = anyio.Event()

    async def authenticate(request: ConnectRequest) -> Accept:
        if request.user_id == "waiting":
            await release.wait()
        return Accept(user_id=request.user_id)

    hub = Hub(authenticator=authenticate)
    with anyio.fail_after(20):
        async with running(hub, ["ws"]) as bound:
            ready = Client([url(bound, "ws")], ClientConfig(user_id="ready"), **FAST)
            waiting = Client([url(bound, "ws")], ClientConfig(user_id="waiting"), **FAST)
            async with ready, waiting:
                await ready.wait_connected()
                await wait_for(lambda: len(hub.connections) == 2)
                (pending,) = [c for c in hub.connections.values() if not c.accepted]
                (accepted,) = list(hub.accepted())
                # Not accepted yet: skipped, even when named as a target.
                assert hub.broadcast(frame("b-1")) == 1
                assert hub.broadcast(frame("b-2"), [pending, accepted]) == 1
                got = await received(ready, 2)
                assert [f.message_id for f in got] == ["b-1", "b-2"]
                release.set()
                await waiting.wait_connected()
                assert hub.broadcast(frame("b-3")) == 2
                (got3,) = await received(waiting, 1)
                assert got3.message_id == "b-3"  # b-1 and b-2 never reached it
                # A closed connection is skipped too.
                accepted.close()
                await wait_for(lambda: accepted.core.closed)
                assert hub.broadcast(frame("b-4"), [accepted]) == 0
