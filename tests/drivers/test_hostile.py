"""Hostile input over real sockets (issue 5 §2), on asyncio and trio.

Each test runs a hub on loopback with small limits, connects well-behaved :class:`Client`s
(one WebSocket, one QUIC), then lets a hand-driven attacker (a bare ``connect_websocket``
or ``connect_quic`` transport sending hand-made bytes) misbehave. It asserts the ERROR
frame's ``code`` metadata, the close number (WebSocket close code / QUIC application
error code, DESIGN §4), that nothing from the attacker reached the application, that the
attacker left the connection table, and that the good clients still complete ``send()``
on the same connection.
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import logging
import secrets
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import pytest
import zstandard

from flare_drivers._client import Client, ConnectionState
from flare_drivers._hub import Accept, Connection, Hub, Reject
from flare_drivers._quic import QuicTransport, connect_quic
from flare_drivers._transport import TransportClosed
from flare_drivers._websocket import WebSocketTransport, connect_websocket, serve_websocket
from flare_proto import (
    ClientConfig,
    CloseCode,
    CommandKind,
    ConnectRequest,
    DecodeError,
    Format,
    Frame,
    FrameTooLarge,
    LengthPrefixFramer,
    Limits,
    ServerConfig,
    decode_frame,
    encode_frame,
    message_frame,
    system_frame,
)
from flare_proto._frames import ACK, CONNECT, CONNECT_ACK, DATA, ERROR, PING, PONG, SEND

from .helpers import FlareProcess, flare_command
from .hubtools import running, url, wait_for

pytestmark = pytest.mark.anyio

Kind = Literal["ws", "quic"]
KINDS: list[Kind] = ["ws", "quic"]
KiB = 1024
MiB = 1024 * KiB
MAX_FRAME = 64 * KiB
LIMITS = Limits(max_frame=MAX_FRAME, max_decompressed=1 * MiB)
HUGE = Limits(max_frame=1 << 30, max_decompressed=1 << 30)
"""For decoding what the server sends us (our own limits are not under test)."""
FAST: dict[str, Any] = {
    "race_stagger": 0.25,
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
    "quic_verify": False,
}


# -- hand-made frames -------------------------------------------------------------------------

_ids = itertools.count()


def _mid() -> str:
    return f"hostile-{next(_ids)}"


def connect_bytes(fmt: Format = Format.PROTOBUF, **metadata: str) -> bytes:
    frame = system_frame(
        CONNECT, message_id=_mid(), timestamp=1, metadata={"format": fmt.wire_name, **metadata}
    )
    return encode_frame(frame, fmt)


def ping_bytes(fmt: Format = Format.PROTOBUF) -> bytes:
    return encode_frame(system_frame(PING, message_id=_mid(), timestamp=1), fmt)


def send_bytes(payload: bytes, fmt: Format = Format.PROTOBUF, kind: int = SEND) -> bytes:
    ident = _mid()
    return encode_frame(message_frame(kind, message_id=ident, timestamp=1, payload=payload), fmt)


def system_type(frame: Frame) -> int | None:
    command = frame.command
    return command.system.type if command.WhichOneof("type") == "system" else None


def error_code(frame: Frame) -> str:
    assert system_type(frame) == ERROR, frame
    code: bytes = frame.command.system.metadata["code"]
    return code.decode()


def all_undecodable(payloads: Sequence[bytes]) -> None:
    """Precondition of the tests below: each of these really is refused by the codec
    (single undecodable frames are dropped and counted, DESIGN §4)."""
    for payload in payloads:
        with pytest.raises(DecodeError):
            decode_frame(payload, LIMITS)


# -- the attacker -----------------------------------------------------------------------------


class RawPeer:
    """A flare peer driven by hand over a real transport: hand-made frames out, the
    server's frames (decoded) and its close number in."""

    def __init__(self, transport: WebSocketTransport | QuicTransport, kind: Kind) -> None:
        self.transport = transport
        self.kind = kind
        self._framer = LengthPrefixFramer(1 << 30) if kind == "quic" else None
        self._payloads: collections.deque[bytes] = collections.deque()
        self.closed: TransportClosed | None = None

    @classmethod
    async def open(cls, bound: dict[str, str], kind: Kind) -> RawPeer:
        transport: WebSocketTransport | QuicTransport
        if kind == "ws":
            transport = await connect_websocket(url(bound, "ws"))
        else:
            transport = await connect_quic(url(bound, "quic"), verify=False)
        return cls(transport, kind)

    async def send(self, *payloads: bytes) -> None:
        """One transport message per frame (WS), or length-prefixed stream bytes (QUIC);
        all in one write."""
        if self._framer is None:
            await self.transport.send(list(payloads))
        else:
            await self.transport.send([len(p).to_bytes(4, "big") + p for p in payloads])

    async def send_raw(self, data: bytes) -> None:
        """Stream bytes as they are (QUIC) / one message (WS)."""
        await self.transport.send([data])

    async def send_fin(self) -> None:
        """End our side of the QUIC stream (FIN)."""
        transport = self.transport
        assert isinstance(transport, QuicTransport)
        transport.connection.send_stream_data(0, b"", end_stream=True)
        await transport.transmit()

    async def _fill(self) -> bool:
        if self.closed is not None:
            return False
        item = await self.transport.receive()
        if isinstance(item, TransportClosed):
            self.closed = item
            return False
        if self._framer is None:
            self._payloads.append(item)
        else:
            self._payloads.extend(self._framer.receive(item))
        return True

    async def frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame from the server, ``None`` once it closed."""
        with anyio.fail_after(timeout):
            while not self._payloads:
                if not await self._fill():
                    return None
        return decode_frame(self._payloads.popleft(), HUGE)[0]

    async def expect(self, kind: int, timeout: float = 5.0) -> Frame:
        frame = await self.frame(timeout)
        assert frame is not None, f"closed ({self.closed}) instead of system type {kind}"
        assert system_type(frame) == kind, frame
        return frame

    async def until_closed(self, timeout: float = 5.0) -> list[Frame]:
        """Every frame the server still sends, up to its close."""
        frames: list[Frame] = []
        with anyio.fail_after(timeout):
            while (frame := await self.frame(timeout)) is not None:
                frames.append(frame)
        return frames

    async def expect_error_close(self, code: CloseCode, timeout: float = 5.0) -> Frame:
        """The server's last word is exactly one ERROR ``code`` and the close ``number``."""
        frames = await self.until_closed(timeout)
        errors = [f for f in frames if system_type(f) == ERROR]
        assert len(errors) == 1 and frames[-1] is errors[0], frames
        assert error_code(errors[0]) == code.code
        assert self.closed is not None and self.closed.number == code.number, self.closed
        return errors[0]

    async def handshake(self, fmt: Format = Format.PROTOBUF, **metadata: str) -> Frame:
        await self.send(connect_bytes(fmt, **metadata))
        return await self.expect(CONNECT_ACK)

    async def aclose(self) -> None:
        await self.transport.aclose(None, "")


# -- the arena: a hub, two good clients, what reached the application -------------------------


@dataclass
class Arena:
    hub: Hub
    bound: dict[str, str]
    good: dict[str, Client] = field(default_factory=dict)
    good_ids: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[str, CommandKind, bytes]] = field(default_factory=list)
    """(connection id, kind, payload) of every frame the application got."""
    connects: list[str] = field(default_factory=list)

    def attacker_frames(self) -> list[tuple[str, CommandKind, bytes]]:
        good = set(self.good_ids.values())
        return [s for s in self.seen if s[0] not in good]

    async def check_good(self) -> None:
        """The attacker is gone, the good clients still work on their first connection."""
        good = set(self.good_ids.values())
        await wait_for(lambda: set(self.hub.connections) == good)
        for kind, client in self.good.items():
            assert client.state is ConnectionState.CONNECTED
            payload = f"still fine over {kind}".encode()
            with anyio.fail_after(5):
                await client.send(payload)
            assert (self.good_ids[kind], CommandKind.SEND, payload) in self.seen
            assert self.hub.connections[self.good_ids[kind]].accepted


SLOW_VERDICT = 3.0
"""Seconds the authenticator takes for tokens starting with ``slow``."""
BRIEF_VERDICT = 0.3
"""Seconds the authenticator takes for tokens starting with ``brief``."""


async def good_tokens(request: ConnectRequest) -> Accept | Reject:
    if request.token and request.token.startswith(("slow", "brief")):
        await anyio.sleep(SLOW_VERDICT if request.token.startswith("slow") else BRIEF_VERDICT)
        if request.token.endswith("-ok"):
            return Accept(user_id="slow-user")
    if request.token and request.token.startswith("good"):
        return Accept(user_id=f"user-{len(request.token)}")  # nothing of the token itself
    return Reject(reason="unknown token")


@asynccontextmanager
async def arena(
    config: ServerConfig | None = None, *, authenticate: bool = False
) -> AsyncIterator[Arena]:
    hub = Hub(
        config or ServerConfig(limits=LIMITS),
        authenticator=good_tokens if authenticate else None,
    )

    async with running(hub, KINDS) as bound:
        a = Arena(hub, bound)

        async def record(conn: Connection, frame: Frame) -> None:
            kind = CommandKind.SEND if frame.command.message.type == SEND else CommandKind.DATA
            a.seen.append((conn.id, kind, frame.command.message.payload))

        async def record_other(conn: Connection, frame: Frame) -> None:
            a.seen.append((conn.id, CommandKind.CUSTOM, frame.SerializeToString()))

        hub.router.on(CommandKind.SEND)(record)
        hub.router.on(CommandKind.DATA)(record)
        for kind in (CommandKind.CUSTOM, CommandKind.ACK, CommandKind.NOTIFICATION):
            hub.router.on(kind)(record_other)

        @hub.on_connect
        async def joined(conn: Connection) -> None:
            a.connects.append(conn.id)

        config_good = ClientConfig(token="good", heartbeat_interval=0.5)
        async with (
            Client([url(bound, "ws")], config_good, **FAST) as ws_client,
            Client([url(bound, "quic")], config_good, **FAST) as quic_client,
        ):
            a.good = {"ws": ws_client, "quic": quic_client}
            for client in a.good.values():
                await client.wait_connected()
            await wait_for(lambda: len(a.connects) == 2)
            for conn in hub.accepted():
                a.good_ids["ws" if isinstance(conn.transport, WebSocketTransport) else "quic"] = (
                    conn.id
                )
            assert len(a.good_ids) == 2
            yield a


# -- garbage and truncation -------------------------------------------------------------------

GARBAGE = [
    b"\xff" * 16,  # a field tag that never ends
    b"\x07",  # field 0
    b"{not json at all",
    b"\x1f\x8b\x08\x00 not really gzip",
    b"\x28\xb5\x2f\xfd junk after the zstd magic",
    b"\x0a\xff\xff\xff\xff\x0f",  # a length-delimited field longer than the frame
    b'{"command": {"type": {"system": {"type": 1}}}',  # unterminated JSON
    b"\x1f\x8b" + gzip.compress(b"x")[2:-4],  # gzip without its trailer
    b"\x4b" * 5000,  # unknown groups nested 5,000 deep
    b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",  # JSON nested 5,000 deep
]


@pytest.mark.parametrize("phase", ["before_connect", "after_connect"])
@pytest.mark.parametrize("kind", KINDS)
async def test_garbage_frames(kind: Kind, phase: str) -> None:
    """Single undecodable frames are dropped; a valid frame resets the count; 8 in a row
    close with ERROR protocol_error / 4003."""
    all_undecodable(GARBAGE)
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, kind)
            if phase == "after_connect":
                await peer.handshake()
            await peer.send(*GARBAGE[:7], ping_bytes())
            await peer.expect(PONG)  # 7 garbage frames were dropped, the PING answered
            await peer.send(*GARBAGE)
            await peer.expect_error_close(CloseCode.PROTOCOL_ERROR)
            assert not a.attacker_frames()
            await a.check_good()


def truncations(frame: bytes) -> list[bytes]:
    """Every prefix of ``frame`` the codec refuses."""
    cuts = []
    for end in range(1, len(frame)):
        try:
            decode_frame(frame[:end], LIMITS)
        except DecodeError:
            cuts.append(frame[:end])
    return cuts


@pytest.mark.parametrize("fmt", [Format.PROTOBUF, Format.JSON])
@pytest.mark.parametrize("kind", KINDS)
async def test_truncated_frames(kind: Kind, fmt: Format) -> None:
    """Frames cut short (inside a well-formed message or length prefix) are undecodable
    frames: dropped, counted, 8 in a row is protocol_error; a whole frame in between is
    delivered and ACKed."""
    cut = truncations(send_bytes(b"p" * 200, fmt))
    assert len(cut) >= 16
    pick = cut[:: max(1, len(cut) // 16)][:16]
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.handshake(fmt)
            await peer.send(*pick[:7], send_bytes(b"whole", fmt))
            ack = await peer.frame()
            assert ack is not None and ack.command.message.type == ACK
            await peer.send(*pick[7:15])
            await peer.expect_error_close(CloseCode.PROTOCOL_ERROR)
            assert [s[2] for s in a.attacker_frames()] == [b"whole"]
            await a.check_good()


async def test_quic_stream_ending_inside_a_frame_is_protocol_error() -> None:
    """A stream that ends (FIN) in the middle of a length-prefixed frame: close 4003, the
    partial frame never reaches the application, the connection leaves the hub."""
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, "quic")
            await peer.handshake()
            whole = send_bytes(b"cut short")
            await peer.send_raw(len(whole).to_bytes(4, "big") + whole[:5])
            await peer.send_fin()
            await peer.until_closed()
            assert peer.closed is not None
            assert peer.closed.number == CloseCode.PROTOCOL_ERROR.number
            assert not a.attacker_frames()
            await a.check_good()


async def test_quic_stream_ending_inside_a_frame_is_announced_with_error() -> None:
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, "quic")
            await peer.handshake()
            whole = send_bytes(b"cut short")
            await peer.send_raw(len(whole).to_bytes(4, "big") + whole[:5])
            await peer.send_fin()
            await peer.expect_error_close(CloseCode.PROTOCOL_ERROR)


# -- sizes ------------------------------------------------------------------------------------


def send_of_size(size: int) -> bytes:
    """A protobuf SEND whose encoding is exactly ``size`` bytes."""
    payload_len = size
    while True:
        data = send_bytes(b"s" * payload_len)
        if len(data) == size:
            return data
        payload_len += size - len(data)


@pytest.mark.parametrize("kind", KINDS)
async def test_frame_of_max_frame_accepted_one_more_is_frame_too_large(kind: Kind) -> None:
    exact = send_of_size(MAX_FRAME)
    over = send_of_size(MAX_FRAME + 1)
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.handshake()
            await peer.send(exact)
            ack = await peer.frame()
            assert ack is not None and ack.command.message.type == ACK
            await peer.send(over)
            await peer.expect_error_close(CloseCode.FRAME_TOO_LARGE)
            payload = decode_frame(exact, LIMITS)[0].command.message.payload
            assert [s[2] for s in a.attacker_frames()] == [payload]
            await a.check_good()


@pytest.mark.parametrize("phase", ["before_connect", "after_connect"])
@pytest.mark.parametrize("prefix", [MAX_FRAME + 1, 0xFFFF_FFFF])
async def test_quic_length_prefix_above_max_frame(prefix: int, phase: str) -> None:
    """Refused as soon as the 4 prefix bytes arrive: no payload is waited for."""
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, "quic")
            if phase == "after_connect":
                await peer.handshake()
            await peer.send_raw(prefix.to_bytes(4, "big") + b"\x0a")
            await peer.expect_error_close(CloseCode.FRAME_TOO_LARGE)
            assert not a.attacker_frames()
            await a.check_good()


@pytest.mark.parametrize("phase", ["before_connect", "after_connect"])
async def test_ws_message_above_max_frame(phase: str) -> None:
    """A 1 MiB WebSocket message against a 64 KiB max_frame: ERROR frame_too_large / 4004;
    the server keeps at most max_frame + 1 bytes of it."""
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, "ws")
            if phase == "after_connect":
                await peer.handshake()
            await peer.send(send_bytes(b"B" * MiB))
            await peer.expect_error_close(CloseCode.FRAME_TOO_LARGE)
            assert not a.attacker_frames()
            await a.check_good()


async def test_ws_fragmented_message_above_max_frame() -> None:
    """The same limit holds for a message sent as many small continuation fragments."""
    from wsproto.events import BytesMessage

    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, "ws")
            await peer.handshake()
            transport = peer.transport
            assert isinstance(transport, WebSocketTransport)
            # wsproto lets us send fragments that WebSocketTransport.send never would.
            ws, stream = transport._ws, transport._stream
            data = send_bytes(b"F" * (2 * MAX_FRAME))
            wire = b"".join(
                ws.send(BytesMessage(data=data[i : i + 4096], message_finished=False))
                for i in range(0, len(data), 4096)
            ) + ws.send(BytesMessage(data=b"", message_finished=True))
            await stream.send(wire)
            await peer.expect_error_close(CloseCode.FRAME_TOO_LARGE)
            assert not a.attacker_frames()
            await a.check_good()


# -- compression bombs ------------------------------------------------------------------------

BOMB_SIZE = 16 * MiB


def _bomb_plain() -> bytes:
    return send_bytes(b"\0" * BOMB_SIZE)


def make_bomb(name: str) -> bytes:
    plain = _bomb_plain()
    if name == "gzip":
        return zlib.compress(plain, 9, 31)
    if name == "gzip_lying_size":
        data = bytearray(zlib.compress(plain, 9, 31))
        data[-4:] = (100).to_bytes(4, "little")  # ISIZE claims 100 bytes
        return bytes(data)
    if name == "zstd_declared":
        return zstandard.ZstdCompressor(level=19, write_content_size=True).compress(plain)
    if name == "zstd_undeclared":
        return zstandard.ZstdCompressor(level=19, write_content_size=False).compress(plain)
    raise AssertionError(name)


BOMBS = ["gzip", "gzip_lying_size", "zstd_declared", "zstd_undeclared"]


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    made = {name: make_bomb(name) for name in BOMBS}
    for name, bomb in made.items():
        assert len(bomb) < MAX_FRAME, (name, len(bomb))  # small on the wire...
        with pytest.raises(FrameTooLarge):  # ...and refused by the codec
            decode_frame(bomb, LIMITS)
    return made


@pytest.mark.parametrize(
    ("bomb", "kind"),
    [(b, "ws") for b in BOMBS] + [("gzip", "quic"), ("zstd_undeclared", "quic")],
)
async def test_compression_bomb(bombs: dict[str, bytes], bomb: str, kind: Kind) -> None:
    """A 16 MiB frame compressed to a few KiB, against max_decompressed = 1 MiB: refused
    with ERROR frame_too_large / 4004 without inflating it."""
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.handshake(compression="gzip" if bomb.startswith("gzip") else "zstd")
            started = anyio.current_time()
            await peer.send(bombs[bomb])
            await peer.expect_error_close(CloseCode.FRAME_TOO_LARGE)
            assert anyio.current_time() - started < 3.0
            assert not a.attacker_frames()
            await a.check_good()


async def test_double_compression_is_not_inflated_twice() -> None:
    """gzip inside gzip: one layer is removed, the inner bomb is not inflated; the frame is
    merely undecodable (dropped), the connection lives on."""
    inner = zlib.compress(_bomb_plain(), 9, 31)
    outer = zlib.compress(inner, 9, 31)
    assert len(inner) < LIMITS.max_decompressed
    with pytest.raises(DecodeError):
        decode_frame(outer, LIMITS)
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, "ws")
            await peer.handshake()
            await peer.send(outer, ping_bytes())
            await peer.expect(PONG)
            await peer.aclose()
            assert not a.attacker_frames()
            await a.check_good()


# -- JSON with wrong types --------------------------------------------------------------------

_CONNECT_JSON = {
    "command": {"type": {"system": {"type": 1, "metadata": {"format": list(b"json")}}}}
}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


WRONG_CONNECTS = [
    _json({"message_id": 5, **_CONNECT_JSON}),
    _json({"timestamp": "yesterday", **_CONNECT_JSON}),
    _json({"reliability": 1.5, **_CONNECT_JSON}),
    _json({"command": {"type": {"system": {"type": "CONNECT"}}}}),
    _json({"command": {"type": {"system": {"type": True}}}}),
    _json({"command": {"type": {"system": {"type": 1, "metadata": {"format": "json"}}}}}),
    _json({"command": {"type": {"system": {"type": 1, "data": [256]}}}}),
    _json({"command": {"type": {"system": {"type": 1 << 40}}}}),
]
WRONG_SENDS = [
    _json({"command": {"type": {"message": {"type": 0, "payload": "text"}}}}),
    _json({"command": {"type": {"message": {"type": 0, "payload": [1, 2, -3]}}}}),
    _json({"command": {"type": {"message": {"type": "SEND", "payload": [1]}}}}),
    _json({"command": {"type": {"message": {"type": 0, "message_id": 42}}}}),
    _json({"command": {"type": {"message": {"type": 0, "seq": -1}}}}),
    _json({"command": {"type": {"message": {"type": 0, "metadata": {"k": "v"}}}}}),
    _json({"command": {"type": {"message": {"type": 0}, "custom": {"name": "x"}}}}),
    _json({"command": {"type": {"message": None}}, "timestamp": None}),
]


@pytest.mark.parametrize("kind", KINDS)
async def test_json_with_wrong_types(kind: Kind) -> None:
    """Wrong JSON types are refused like serde would: each such frame is dropped (a
    CONNECT among them does not count), a good frame resets the count, 8 in a row
    close with protocol_error, announced in the negotiated JSON."""
    all_undecodable(WRONG_CONNECTS + WRONG_SENDS)
    with anyio.fail_after(20):
        async with arena() as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.send(*WRONG_CONNECTS[:7])
            ack = await peer.handshake(Format.JSON)
            assert int(ack.command.system.format) == int(Format.JSON)
            await peer.send(*WRONG_SENDS[:7], send_bytes(b"typed right", Format.JSON))
            reply = await peer.frame()
            assert reply is not None and reply.command.message.type == ACK
            await peer.send(*WRONG_SENDS)
            frames = await peer.until_closed()
            assert frames and error_code(frames[-1]) == "protocol_error"
            assert peer.closed is not None and peer.closed.number == 4003
            assert [s[2] for s in a.attacker_frames()] == [b"typed right"]
            assert a.connects.count(a.connects[-1]) == 1
            await a.check_good()


# -- frames before CONNECT, CONNECT repeated --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_thousand_frames_before_connect(kind: Kind) -> None:
    """1,000 application frames before CONNECT, in one write: the first one already
    closes with protocol_error (one ERROR, not a thousand), nothing reaches the
    application, no connection is announced."""
    flood = [send_bytes(f"sneak {i}".encode(), kind=(SEND, DATA, ACK)[i % 3]) for i in range(1000)]
    with anyio.fail_after(20):
        async with arena() as a:
            before = list(a.connects)
            peer = await RawPeer.open(a.bound, kind)
            await peer.send(*flood)
            await peer.expect_error_close(CloseCode.PROTOCOL_ERROR)
            assert not a.attacker_frames()
            assert a.connects == before
            await a.check_good()


async def refused_before_verdict(peer: RawPeer) -> None:
    """ERROR protocol_error well before the verdict could have come, then close 4003."""
    error = await peer.expect(ERROR, timeout=SLOW_VERDICT * 0.8)
    assert error_code(error) == CloseCode.PROTOCOL_ERROR.code
    assert await peer.until_closed() == []
    assert peer.closed is not None and peer.closed.number == CloseCode.PROTOCOL_ERROR.number


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_repeated_before_verdict(kind: Kind) -> None:
    """A second CONNECT while the first waits for its verdict: protocol_error at once;
    the connection is never announced, its held frames never delivered."""
    with anyio.fail_after(20):
        async with arena(authenticate=True) as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.send(connect_bytes(token="slow-ok"))
            await anyio.sleep(0.1)  # the verdict is pending now
            await peer.send(send_bytes(b"held"), connect_bytes(token="good-3"))
            await refused_before_verdict(peer)
            assert not a.attacker_frames()
            assert len(a.connects) == 2  # the good clients only
            await a.check_good()


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_repeated_after_accept(kind: Kind) -> None:
    with anyio.fail_after(20):
        async with arena(authenticate=True) as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.handshake(token="good-1")
            await peer.send(send_bytes(b"first"))
            ack = await peer.frame()
            assert ack is not None and ack.command.message.type == ACK
            await peer.send(connect_bytes(token="good-2"), send_bytes(b"never"))
            await peer.expect_error_close(CloseCode.PROTOCOL_ERROR)
            assert [s[2] for s in a.attacker_frames()] == [b"first"]
            assert len(a.connects) == 3
            await a.check_good()


@pytest.mark.parametrize("kind", KINDS)
async def test_frames_during_auth_are_delivered_in_order_after_accept(kind: Kind) -> None:
    with anyio.fail_after(20):
        async with arena(authenticate=True) as a:
            peer = await RawPeer.open(a.bound, kind)
            held = [f"held {i}".encode() for i in range(64)]
            await peer.send(connect_bytes(token="brief-ok"), *(send_bytes(p) for p in held))
            await peer.expect(CONNECT_ACK, timeout=BRIEF_VERDICT + 5)
            for _ in held:
                ack = await peer.frame()
                assert ack is not None and ack.command.message.type == ACK
            assert [s[2] for s in a.attacker_frames()] == held
            await peer.aclose()
            await a.check_good()


@pytest.mark.parametrize("kind", KINDS)
async def test_too_many_frames_during_auth(kind: Kind) -> None:
    """More than max_held_frames (64) frames before the verdict: protocol_error, before
    the verdict, and none of them reaches the application."""
    with anyio.fail_after(20):
        async with arena(authenticate=True) as a:
            peer = await RawPeer.open(a.bound, kind)
            await peer.send(connect_bytes(token="slow-ok"))
            await anyio.sleep(0.1)  # the verdict is pending now
            await peer.send(*(send_bytes(f"held {i}".encode()) for i in range(65)))
            await refused_before_verdict(peer)
            assert not a.attacker_frames()
            assert len(a.connects) == 2
            await a.check_good()


# -- slowloris --------------------------------------------------------------------------------

SLOW_CONFIG = ServerConfig(limits=LIMITS, auth_timeout=0.5)


async def _ws_never_connects(
    address: str, results: list[tuple[float, list[Frame], int | None]]
) -> None:
    started = anyio.current_time()
    peer = RawPeer(await connect_websocket(f"ws://{address}"), "ws")
    frames = await peer.until_closed(10)
    assert peer.closed is not None
    results.append((anyio.current_time() - started, frames, peer.closed.number))


async def _http_never_finishes(address: str, partial_request: bytes, ends: list[float]) -> None:
    host, port = address.rsplit(":", 1)
    started = anyio.current_time()
    async with await anyio.connect_tcp(host, int(port)) as stream:
        if partial_request:
            await stream.send(partial_request)
        try:
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    ends.append(anyio.current_time() - started)


async def test_slowloris_websocket() -> None:
    """200 WebSocket connections that never send CONNECT are all closed with ERROR
    auth_timeout / 4002 (not before auth_timeout), 20 sockets that never finish the HTTP
    upgrade are closed after the handshake timeout; meanwhile a good client chats."""
    hub = Hub(SLOW_CONFIG)
    connects: list[str] = []

    @hub.on_connect
    async def joined(conn: Connection) -> None:
        connects.append(conn.id)

    results: list[tuple[float, list[Frame], int | None]] = []
    http_ends: list[float] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as server:
            address = await server.start(
                partial(
                    serve_websocket,
                    hub.handle_transport,
                    handshake_timeout=1.0,
                    max_message=MAX_FRAME,
                )
            )
            good_config = ClientConfig(heartbeat_interval=0.2)
            async with Client([f"ws://{address}"], good_config, **FAST) as good:
                await good.wait_connected()
                (good_id,) = connects
                async with anyio.create_task_group() as attack:
                    for i in range(20):
                        partial_request = b"GET / HTTP/1.1\r\nHost: x\r\n" if i % 2 else b""
                        attack.start_soon(_http_never_finishes, address, partial_request, http_ends)
                    for _ in range(200):
                        attack.start_soon(_ws_never_connects, address, results)
                    for i in range(10):  # the good client keeps working during the attack
                        await good.send(f"during {i}".encode())
                        await anyio.sleep(0.05)
                assert len(results) == 200 and len(http_ends) == 20
                for elapsed, frames, number in results:
                    assert [error_code(f) for f in frames] == ["auth_timeout"]
                    assert number == CloseCode.AUTH_TIMEOUT.number
                    assert 0.4 <= elapsed < 5.0
                assert all(0.9 <= end < 5.0 for end in http_ends), http_ends
                assert connects == [good_id]
                await wait_for(lambda: set(hub.connections) == {good_id})
                assert good.state is ConnectionState.CONNECTED
                await good.send(b"after")
            server.cancel_scope.cancel()


async def test_slowloris_quic() -> None:
    """30 QUIC connections that open the stream (a partial length prefix) but never send
    CONNECT are closed with ERROR auth_timeout / 4002."""
    results: list[tuple[float, list[Frame], int | None]] = []

    async def loris(bound: dict[str, str], stuck: bytes) -> None:
        started = anyio.current_time()
        peer = await RawPeer.open(bound, "quic")
        await peer.send_raw(stuck)
        frames = await peer.until_closed(10)
        assert peer.closed is not None
        results.append((anyio.current_time() - started, frames, peer.closed.number))

    with anyio.fail_after(30):
        async with arena(SLOW_CONFIG) as a:
            async with anyio.create_task_group() as attack:
                for i in range(30):
                    # Half a length prefix; or a prefix announcing a frame never sent.
                    stuck = b"\x00\x00" if i % 2 else b"\x00\x00\x01\x00" + b"\x0a"
                    attack.start_soon(loris, a.bound, stuck)
            assert len(results) == 30
            for elapsed, frames, number in results:
                assert [error_code(f) for f in frames] == ["auth_timeout"]
                assert number == CloseCode.AUTH_TIMEOUT.number
                assert elapsed < 5.0
            assert not a.attacker_frames()
            await a.check_good()


# -- the token never appears in logs ----------------------------------------------------------


async def test_token_never_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Tokens of accepted, rejected, timed-out and misbehaving connections, on both
    transports, never appear in any log record at DEBUG, nor in device metadata or the
    request's repr."""
    caplog.set_level(logging.DEBUG)
    for name in ("flare", "flare.server", "flare.client", "flare.websocket", "flare.quic"):
        caplog.set_level(logging.DEBUG, logger=name)
    tokens = {tag: f"good-{tag}-{secrets.token_hex(8)}" for tag in ("ws", "quic", "raw", "again")}
    bad = {tag: f"bad-{tag}-{secrets.token_hex(8)}" for tag in ("ws", "quic")}
    seen_requests: list[str] = []
    config = ServerConfig(limits=LIMITS, auth_timeout=0.5)
    with anyio.fail_after(30):
        async with arena(config, authenticate=True) as a:

            @a.hub.on_connect
            async def inspect(conn: Connection) -> None:
                seen_requests.append(repr(conn.core.request))
                if conn.device is not None:
                    seen_requests.append(repr(conn.device))
                seen_requests.append(repr(dict(conn.metadata)))

            for kind in KINDS:
                ok = Client([url(a.bound, kind)], ClientConfig(token=tokens[kind]), **FAST)
                async with ok:
                    await ok.wait_connected()
                    await ok.send(b"hello")
                rejected = Client(
                    [url(a.bound, kind)], ClientConfig(token=bad[kind]), reconnect=False, **FAST
                )
                async with rejected:
                    with pytest.raises(Exception, match="auth_failed"):
                        await rejected.wait_connected()
                # Accepted, then CONNECT again with another token: protocol_error.
                peer = await RawPeer.open(a.bound, kind)
                await peer.handshake(token=tokens["raw"], device_id="d1", platform="ios")
                await peer.send(connect_bytes(token=tokens["again"]))
                await peer.expect_error_close(CloseCode.PROTOCOL_ERROR)
                # No verdict in time: auth_timeout.
                slow = await RawPeer.open(a.bound, kind)
                await slow.send(connect_bytes(token="slow-no"))
                await slow.expect_error_close(CloseCode.AUTH_TIMEOUT)
            await a.check_good()
    assert len(caplog.records) > 10  # debug logging really was on
    texts = [caplog.text, *seen_requests]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), record.exc_text or ""]
    for secret in [*tokens.values(), *bad.values()]:
        leaks = [t[max(0, t.index(secret) - 200) :][:300] for t in texts if secret in t]
        assert not leaks, f"token {secret} leaked: {leaks[:3]}"


def test_token_never_in_cli_output(tmp_path: Path) -> None:
    """``flare -v serve --tokens`` and ``flare -v connect --token``: neither the server's
    nor the clients' output ever shows a token, accepted or refused."""
    good, wrong = f"tok-{secrets.token_hex(12)}", f"tok-{secrets.token_hex(12)}"
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({good: "alice"}))
    server = FlareProcess(
        flare_command(
            "-v",
            "serve",
            "--tokens",
            str(tokens_file),
            "--ws",
            "127.0.0.1:0",
            "--quic",
            "127.0.0.1:0",
            "--auth-timeout",
            "1",
        ),
        name="flare serve",
    )
    clients: list[FlareProcess] = []
    try:
        addresses = server.expect(lambda line: isinstance(line, dict), 10)
        ws, quic = f"ws://{addresses['ws']}", f"quic://{addresses['quic']}"
        for target, token in ((ws, good), (quic, good), (ws, wrong), (quic, wrong)):
            argv = flare_command("-v", "connect", "--token", token, "--insecure", target)
            clients.append(FlareProcess(argv, name="flare connect", graceful=2.0))
        for client in clients[:2]:
            client.expect_event(event="state", state="connected", timeout=10)
            client.send_line("hello with a token")
            client.expect_event(event="ack", timeout=5)
        for client in clients[2:]:
            client.expect_event(event="state", state="closed", code="auth_failed", timeout=10)
        for client in clients:
            client.close()
        assert "DEBUG" in server.stderr  # -v really is on
    finally:
        for client in clients:
            client.close()
        server.close()
    # Everything they printed (not describe(): it repeats the command line, token and all).
    outputs = [p.stderr + json.dumps(p.lines) for p in (server, *clients)]
    for secret in (good, wrong):
        assert not [o for o in outputs if secret in o], f"token {secret} leaked"
