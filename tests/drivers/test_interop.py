"""Interop with an independent WebSocket implementation (the ``websockets`` library).

Frames sent to flare are made by hand from the wire spec (reference §1, §2): protobuf with
the tiny varint/field encoder below, JSON in the exact serde shape; answers are decoded
by hand too (flare's codec is never used on this side). The encoder is first checked
against the byte-exact examples of reference §2.4, so these tests pin flare to the spec,
not to itself. Everything runs on 127.0.0.1, on asyncio (``websockets`` is asyncio-only),
and every test is bounded.

1. raw ``websockets`` clients against a real ``flare serve`` subprocess (the chat room);
2. flare's :class:`~flare_drivers._client.Client` against a hand-written ``websockets``
   server that speaks the minimum of the protocol;
3. the health endpoint on the WebSocket port.
"""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection as WsClient
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection as WsServerConn
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from flare_drivers._client import Client, ConnectionState, StateChanged
from flare_proto import ClientConfig, FrameReceived

from .helpers import ServeProcess

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """``websockets`` is built on asyncio: this module runs on asyncio only."""
    return "asyncio"


# -- wire constants (reference §1) -------------------------------------------------------------

CONNECT, CONNECT_ACK, CLOSE, PING, PONG, ERROR = 1, 2, 3, 4, 5, 6
SEND, ACK = 0, 1
PROTOBUF, JSON = 0, 1
TS = 1730000000000
ID1 = "1730000000000-0000000000000001"

# -- a hand-rolled protobuf encoder ------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def f_varint(number: int, value: int) -> bytes:
    """A varint field; proto3 omits the default 0."""
    return varint(number << 3) + varint(value) if value else b""


def f_bytes(number: int, data: bytes, *, always: bool = False) -> bytes:
    """A length-delimited field; proto3 omits empty strings/bytes (not sub-messages)."""
    if not data and not always:
        return b""
    return varint(number << 3 | 2) + varint(len(data)) + data


def f_map(number: int, mapping: dict[str, bytes]) -> bytes:
    """map<string, bytes>: one ``{1: key, 2: value}`` entry message per item."""
    return b"".join(
        f_bytes(number, f_bytes(1, k.encode()) + f_bytes(2, v), always=True)
        for k, v in mapping.items()
    )


def pb_frame(command: bytes, message_id: str = ID1, timestamp: int = TS) -> bytes:
    """Frame{1 command, 2 message_id, 3 reliability=AT_LEAST_ONCE, 4 timestamp}."""
    return (
        f_bytes(1, command, always=True)
        + f_bytes(2, message_id.encode())
        + f_varint(3, 1)
        + f_varint(4, timestamp)
    )


def pb_system(
    kind: int, *, fmt: int = 0, message: str = "", metadata: dict[str, bytes] | None = None
) -> bytes:
    """Command{1 system: SystemCommand{1 type, 2 format, 3 message, 4 metadata, 5 data}}."""
    inner = (
        f_varint(1, kind)
        + f_varint(2, fmt)
        + f_bytes(3, message.encode())
        + f_map(4, metadata or {})
    )
    return f_bytes(1, inner, always=True)


def pb_message(
    kind: int, message_id: str, payload: bytes = b"", metadata: dict[str, bytes] | None = None
) -> bytes:
    """Command{2 message: MessageCommand{1 type, 2 message_id, 3 payload, 4 metadata, 5 seq}}."""
    inner = (
        f_varint(1, kind)
        + f_bytes(2, message_id.encode())
        + f_bytes(3, payload)
        + f_map(4, metadata or {})
    )
    return f_bytes(2, inner, always=True)


def pb_custom(name: str, data: bytes = b"", metadata: dict[str, bytes] | None = None) -> bytes:
    """Command{4 custom: CustomCommand{1 name, 2 data, 3 metadata}}."""
    inner = f_bytes(1, name.encode()) + f_bytes(2, data) + f_map(3, metadata or {})
    return f_bytes(4, inner, always=True)


# -- JSON in the serde shape (reference §2.2), built by hand -----------------------------------


def _ints(data: bytes) -> list[int]:
    return list(data)


def _jmeta(metadata: dict[str, bytes] | None) -> dict[str, list[int]]:
    return {k: _ints(v) for k, v in (metadata or {}).items()}


def compact(value: Any) -> bytes:
    """serde_json's compact output: no spaces, non-ASCII raw."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def js_frame(command: dict[str, Any] | None, message_id: str = ID1, timestamp: int = TS) -> bytes:
    return compact(
        {
            "command": command,
            "message_id": message_id,
            "reliability": 1,
            "timestamp": timestamp,
            "metadata": {},
        }
    )


def js_system(
    kind: int, *, fmt: int = 0, message: str = "", metadata: dict[str, bytes] | None = None
) -> dict[str, Any]:
    body = {"type": kind, "format": fmt, "message": message, "metadata": _jmeta(metadata)}
    return {"type": {"system": {**body, "data": []}}}


def js_message(
    kind: int, message_id: str, payload: bytes = b"", metadata: dict[str, bytes] | None = None
) -> dict[str, Any]:
    body = {
        "type": kind,
        "message_id": message_id,
        "payload": _ints(payload),
        "metadata": _jmeta(metadata),
        "seq": 0,
    }
    return {"type": {"message": body}}


def js_custom(
    name: str, data: bytes = b"", metadata: dict[str, bytes] | None = None
) -> dict[str, Any]:
    return {"type": {"custom": {"name": name, "data": _ints(data), "metadata": _jmeta(metadata)}}}


class Enc:
    """Hand-made frames in one format (``"protobuf"`` or ``"json"``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.number = PROTOBUF if name == "protobuf" else JSON

    def system(self, kind: int, *, ident: str = ID1, **kw: Any) -> bytes:
        if self.name == "json":
            return js_frame(js_system(kind, **kw), ident)
        return pb_frame(pb_system(kind, **kw), ident)

    def connect(self, **metadata: str) -> bytes:
        """An unforced CONNECT naming this format (field and metadata, as v0.1.2 does)."""
        meta = {"format": self.name.encode(), "compression": b"none"}
        meta.update({k: v.encode() for k, v in metadata.items()})
        return self.system(CONNECT, fmt=self.number, metadata=meta)

    def message(
        self, kind: int, message_id: str, payload: bytes = b"", *, ident: str = ID1, **kw: Any
    ) -> bytes:
        if self.name == "json":
            return js_frame(js_message(kind, message_id, payload, **kw), ident)
        return pb_frame(pb_message(kind, message_id, payload, **kw), ident)

    def custom(self, name: str, data: bytes = b"", *, ident: str = ID1, **kw: Any) -> bytes:
        if self.name == "json":
            return js_frame(js_custom(name, data, **kw), ident)
        return pb_frame(pb_custom(name, data, **kw), ident)


# -- a hand-rolled decoder ---------------------------------------------------------------------


def pb_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of a protobuf message (varint/len/fixed)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0

    def read_varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, read_varint()))
        elif wire == 2:
            size = read_varint()
            out.append((number, data[pos : pos + size]))
            pos += size
        elif wire == 1:
            out.append((number, int.from_bytes(data[pos : pos + 8], "little")))
            pos += 8
        elif wire == 5:
            out.append((number, int.from_bytes(data[pos : pos + 4], "little")))
            pos += 4
        else:
            raise ValueError(f"wire type {wire} at {pos}")
    assert pos == len(data), "truncated protobuf"
    return out


# Field layouts (number -> (name, kind)) per message, reference §1.
_LAYOUT: dict[str, dict[int, tuple[str, str]]] = {
    "system": {1: ("type", "int"), 2: ("format", "int"), 3: ("message", "str"),
               4: ("metadata", "map"), 5: ("data", "bytes")},
    "message": {1: ("type", "int"), 2: ("message_id", "str"), 3: ("payload", "bytes"),
                4: ("metadata", "map"), 5: ("seq", "int")},
    "notification": {1: ("type", "int"), 2: ("title", "str"), 3: ("content", "bytes"),
                     4: ("metadata", "map")},
    "custom": {1: ("name", "str"), 2: ("data", "bytes"), 3: ("metadata", "map")},
}  # fmt: skip
_DEFAULTS = {"int": 0, "str": "", "bytes": b""}
_VARIANTS = {1: "system", 2: "message", 3: "notification", 4: "custom"}


@dataclass
class Decoded:
    """One frame, decoded by hand: ``kind`` is the Command variant, ``body`` its fields."""

    encoding: str
    message_id: str = ""
    reliability: int = 0
    timestamp: int = 0
    kind: str | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def system_type(self) -> int | None:
        return self.body["type"] if self.kind == "system" else None

    def meta(self, key: str) -> str | None:
        raw = self.body.get("metadata", {}).get(key)
        return None if raw is None else raw.decode("utf-8")


def _pb_body(variant: str, data: bytes) -> dict[str, Any]:
    layout = _LAYOUT[variant]
    body: dict[str, Any] = {
        name: ({} if kind == "map" else _DEFAULTS[kind]) for name, kind in layout.values()
    }
    for number, value in pb_fields(data):
        if number not in layout:
            continue
        name, kind = layout[number]
        if kind == "int":
            body[name] = value
        elif kind == "str":
            assert isinstance(value, bytes)
            body[name] = value.decode("utf-8")
        elif kind == "bytes":
            body[name] = value
        else:
            assert isinstance(value, bytes)
            entry = dict(pb_fields(value))
            key = entry.get(1, b"")
            assert isinstance(key, bytes)
            body[name][key.decode("utf-8")] = entry.get(2, b"")
    return body


# Declaration order of the keys (reference §2.2), which serde keeps.
_JSON_KEYS = {
    "frame": ["command", "message_id", "reliability", "timestamp", "metadata"],
    "system": ["type", "format", "message", "metadata", "data"],
    "message": ["type", "message_id", "payload", "metadata", "seq"],
    "notification": ["type", "title", "content", "metadata"],
    "custom": ["name", "data", "metadata"],
}


def decode(raw: bytes | str) -> Decoded:
    """Decode a frame flare sent, by hand; JSON must be exactly in the serde shape."""
    assert isinstance(raw, bytes), "flare sends every frame as a Binary message"
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:1] == b"{":
        obj = json.loads(raw)
        # Compact, declaration order, non-ASCII raw: re-serializing gives the same bytes.
        assert compact(obj) == raw, raw
        assert list(obj) == _JSON_KEYS["frame"], raw
        out = Decoded("json", obj["message_id"], obj["reliability"], obj["timestamp"])
        command = obj["command"]
        if command is not None and command["type"] is not None:
            ((variant, body),) = command["type"].items()
            assert list(body) == _JSON_KEYS[variant], raw
            out.kind = variant
            kinds = dict(_LAYOUT[variant].values())
            out.body = {
                k: bytes(v) if kinds[k] == "bytes"
                else {mk: bytes(mv) for mk, mv in v.items()} if kinds[k] == "map"
                else v
                for k, v in body.items()
            }  # fmt: skip
        return out
    out = Decoded("protobuf")
    for number, value in pb_fields(raw):
        if number == 1:
            assert isinstance(value, bytes)
            for variant_no, inner in pb_fields(value):
                out.kind = _VARIANTS[variant_no]
                assert isinstance(inner, bytes)
                out.body = _pb_body(out.kind, inner)
        elif number == 2:
            assert isinstance(value, bytes)
            out.message_id = value.decode("utf-8")
        elif number == 3:
            assert isinstance(value, int)
            out.reliability = value
        elif number == 4:
            assert isinstance(value, int)
            out.timestamp = value
    return out


# -- the hand codec against reference §2.4 (so the tests below rest on the spec) ---------------


async def test_hand_codec_matches_reference_examples() -> None:
    # E1 — PING, protobuf.
    e1 = bytes.fromhex(
        "0a040a020804" "121e" + ID1.encode().hex() + "1801" "2080a8a4e0ac32"
    )  # fmt: skip
    assert pb_frame(pb_system(PING)) == e1
    # E3 — v0.1.2 SEND "hi", protobuf.
    e3 = bytes.fromhex("0a0b120912036d2d311a026869") + e1[6:]
    assert pb_frame(pb_message(SEND, "m-1", b"hi")) == e3
    # E2 — CONNECT_ACK with metadata {"compression": "none"}.
    e2 = bytes.fromhex("0a190a17080222130a0b" + b"compression".hex() + "1204" + b"none".hex())
    ack = pb_frame(pb_system(CONNECT_ACK, metadata={"compression": b"none"}))
    assert ack.startswith(e2)
    # E4/E6 — JSON CONNECT (one metadata key, the map order is free), PING and SEND.
    assert Enc("json").system(CONNECT, fmt=JSON, metadata={"format": b"json"}) == (
        b'{"command":{"type":{"system":{"type":1,"format":1,"message":"","metadata":'
        b'{"format":[106,115,111,110]},"data":[]}}},"message_id":"' + ID1.encode()
        + b'","reliability":1,"timestamp":1730000000000,"metadata":{}}'
    )  # fmt: skip
    assert js_frame(js_system(PING)) == (
        b'{"command":{"type":{"system":{"type":4,"format":0,"message":"","metadata":{},'
        b'"data":[]}}},"message_id":"1730000000000-0000000000000001","reliability":1,'
        b'"timestamp":1730000000000,"metadata":{}}'
    )
    assert js_frame(js_message(SEND, "m-1", b"hi")) == (
        b'{"command":{"type":{"message":{"type":0,"message_id":"m-1","payload":[104,105],'
        b'"metadata":{},"seq":0}}},"message_id":"1730000000000-0000000000000001",'
        b'"reliability":1,"timestamp":1730000000000,"metadata":{}}'
    )
    # And the hand decoder reads both back.
    for raw in (e3, js_frame(js_message(SEND, "m-1", b"hi"))):
        d = decode(raw)
        assert (d.kind, d.body["type"], d.body["message_id"], d.body["payload"]) == (
            "message",
            SEND,
            "m-1",
            b"hi",
        )
        assert (d.message_id, d.reliability, d.timestamp) == (ID1, 1, TS)


# -- 1. websockets clients against `flare serve` -----------------------------------------------


@pytest.fixture
def flare_server() -> Iterator[ServeProcess]:
    """A ``flare serve`` subprocess (WS + QUIC on free ports); must exit 0 on SIGTERM."""
    with ServeProcess("--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0") as server:
        yield server
        status = server.stop()
        assert status == 0, f"flare serve exited with {status} on SIGTERM{server.describe()}"


@asynccontextmanager
async def raw_client(server: ServeProcess) -> AsyncIterator[WsClient]:
    async with ws_connect(server.url("ws"), compression=None, open_timeout=5) as ws:
        yield ws


async def recv(ws: WsClient) -> Decoded:
    return decode(await ws.recv())


async def handshake(ws: WsClient, enc: Enc, *, text: bool = False, **metadata: str) -> Decoded:
    frame = enc.connect(**metadata)
    await ws.send(frame.decode() if text else frame)
    ack = await recv(ws)
    assert ack.system_type == CONNECT_ACK, ack
    return ack


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
async def test_connect_ping_send_ack(flare_server: ServeProcess, fmt: str) -> None:
    enc = Enc(fmt)
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            # Unforced CONNECT: the server (prefer=client) takes the client's format.
            ack = await handshake(ws, enc)
            assert ack.encoding == fmt
            assert ack.body["format"] == enc.number
            assert ack.meta("compression") == "none"
            assert ack.reliability == 1 and ack.message_id and ack.timestamp > TS

            await ws.send(enc.system(PING, ident="ping-1"))
            pong = await recv(ws)
            assert (pong.encoding, pong.system_type) == (fmt, PONG)

            await ws.send(enc.message(SEND, "m-1", b"hello", ident="frame-1"))
            reply = await recv(ws)
            assert (reply.encoding, reply.kind) == (fmt, "message")
            assert reply.body["type"] == ACK
            assert reply.body["message_id"] == "m-1"  # the ACK names the SEND


async def test_ping_before_connect_gets_pong(flare_server: ServeProcess) -> None:
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            await ws.send(Enc("json").system(PING))
            pong = await recv(ws)
            assert (pong.encoding, pong.system_type) == ("json", PONG)
            await handshake(ws, Enc("protobuf"))


async def test_chat_between_two_websockets_clients(flare_server: ServeProcess) -> None:
    alice_enc, bob_enc = Enc("json"), Enc("protobuf")
    text = 'héllo wörld ✓ "quoted" \\ /'.encode()
    with anyio.fail_after(10):
        async with raw_client(flare_server) as alice, raw_client(flare_server) as bob:
            await handshake(alice, alice_enc, user_id="alice")
            await handshake(bob, bob_enc, user_id="bob")

            await alice.send(alice_enc.message(SEND, "m-1", text, metadata={"k": b"v"}))
            ack = await recv(alice)
            assert (ack.kind, ack.body["type"], ack.body["message_id"]) == ("message", ACK, "m-1")
            got = await recv(bob)
            assert got.encoding == "protobuf"  # relayed in bob's own encoding
            assert (got.kind, got.body["type"]) == ("message", SEND)
            assert got.body["payload"] == text
            assert got.meta("from") == "alice"  # auth off: the claimed user id
            assert got.body["message_id"] and got.body["message_id"] != "m-1"

            await bob.send(bob_enc.message(SEND, "b-1", b"\x00\xffbinary"))
            ack = await recv(bob)
            assert (ack.encoding, ack.body["type"], ack.body["message_id"]) == (
                "protobuf",
                ACK,
                "b-1",
            )
            got = await recv(alice)
            assert got.encoding == "json"
            assert (got.body["type"], got.body["payload"]) == (SEND, b"\x00\xffbinary")
            assert got.meta("from") == "bob"


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
async def test_custom_echo_comes_back_unchanged(flare_server: ServeProcess, fmt: str) -> None:
    enc = Enc(fmt)
    frame = enc.custom("echo", bytes(range(256)), metadata={"key": "ключ".encode()}, ident="e-1")
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            await handshake(ws, enc)
            await ws.send(frame)
            raw = await ws.recv()
            # Same frame, same encoding, one-entry map: byte for byte what we sent.
            assert raw == frame
            echoed = decode(raw)
            assert (echoed.kind, echoed.body["name"], echoed.body["data"]) == (
                "custom",
                "echo",
                bytes(range(256)),
            )


async def test_text_message_with_json_connect_is_accepted(flare_server: ServeProcess) -> None:
    enc = Enc("json")
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            ack = await handshake(ws, enc, text=True)
            assert ack.encoding == "json"
            await ws.send(enc.message(SEND, "t-1", "über".encode()).decode())  # Text again
            reply = await recv(ws)
            assert (reply.body["type"], reply.body["message_id"]) == (ACK, "t-1")


async def expect_protocol_error(ws: WsClient) -> None:
    """ERROR ``protocol_error``, then the WebSocket closes with 4003 "protocol_error"."""
    error = await recv(ws)
    assert error.system_type == ERROR, error
    assert error.meta("code") == "protocol_error"
    with pytest.raises(ConnectionClosed):
        while True:
            extra = await ws.recv()
            raise AssertionError(f"unexpected frame after ERROR: {extra!r}")
    assert (ws.close_code, ws.close_reason) == (4003, "protocol_error")


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
async def test_send_before_connect_is_protocol_error(flare_server: ServeProcess, fmt: str) -> None:
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            await ws.send(Enc(fmt).message(SEND, "early", b"too soon"))
            await expect_protocol_error(ws)


GARBAGE = [
    b"\xff\xff\xff",  # protobuf: a varint that never ends
    b"\x07garbage",  # protobuf: wire type 7
    b"{not json",  # detected as JSON, invalid
    b'{"command":{"type":{"payload":{}}}}',  # an unknown oneof variant
    b"\x1f\x8bnot gzip at all",  # gzip magic, bad stream
    b"\x28\xb5\x2f\xfdjunk",  # zstd magic, bad stream
    b'{"command":null,"message_id":5}',  # JSON, wrong value type
    b"\x0a\x05\x0a\x03",  # protobuf: truncated sub-message
]


async def test_garbage_before_connect(flare_server: ServeProcess) -> None:
    """DESIGN §4: an undecodable frame is dropped; 8 in a row close with protocol_error."""
    enc = Enc("json")
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            for junk in GARBAGE[:-1]:
                await ws.send(junk)
            await ws.send(enc.system(PING))  # 7 dropped: still alive, counter reset
            assert (await recv(ws)).system_type == PONG
            for junk in GARBAGE:
                await ws.send(junk)
            await expect_protocol_error(ws)


async def test_garbage_then_connect_is_accepted(flare_server: ServeProcess) -> None:
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            await ws.send(b"\xff\xff\xff")
            await ws.send("{not json")
            await handshake(ws, Enc("protobuf"))


async def test_forced_gzip_against_stdlib_gzip(flare_server: ServeProcess) -> None:
    """Forced protobuf+gzip: CONNECT_ACK stays plain; big frames are gzip both ways, made
    and read with the standard library's gzip."""
    enc = Enc("protobuf")
    with anyio.fail_after(10):
        async with raw_client(flare_server) as ws:
            meta = {"format": b"protobuf", "compression": b"gzip", "force_format": b"true"}
            await ws.send(enc.system(CONNECT, fmt=PROTOBUF, metadata=meta))
            raw_ack = await ws.recv()
            assert isinstance(raw_ack, bytes) and raw_ack[:2] != b"\x1f\x8b"
            ack = decode(raw_ack)
            assert ack.system_type == CONNECT_ACK and ack.meta("compression") == "gzip"

            big = bytes(range(256)) * 8
            await ws.send(gzip.compress(enc.message(SEND, "g-1", big)))
            reply = await recv(ws)  # small: sent plain (receivers detect by magic)
            assert (reply.body["type"], reply.body["message_id"]) == (ACK, "g-1")

            frame = enc.custom("echo", big)
            await ws.send(gzip.compress(frame))
            raw = await ws.recv()
            assert isinstance(raw, bytes) and raw[:2] == b"\x1f\x8b"
            assert gzip.decompress(raw) == frame


# -- 3. the health endpoint --------------------------------------------------------------------


def _http_get(address: str, path: str) -> tuple[int, bytes]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def test_healthz_on_the_websocket_port(flare_server: ServeProcess) -> None:
    with anyio.fail_after(10):
        status, _ = await anyio.to_thread.run_sync(
            _http_get, flare_server.addresses["ws"], "/healthz"
        )
        assert status == 200
        status, _ = await anyio.to_thread.run_sync(_http_get, flare_server.addresses["ws"], "/nope")
        assert status == 404
        # The port still speaks WebSocket afterwards.
        async with raw_client(flare_server) as ws:
            await handshake(ws, Enc("json"))


# -- 2. flare's Client against a hand-written websockets server --------------------------------


@dataclass
class HandServer:
    """The minimum of a flare server, by hand: CONNECT_ACK, ACK for SEND, PONG for PING,
    and a server push after the SEND ``hi``. Records what it received."""

    ack_format: str
    compression: str
    received: list[Decoded] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    closes: anyio.Event = field(default_factory=anyio.Event)
    pinged: anyio.Event = field(default_factory=anyio.Event)
    errors: list[BaseException] = field(default_factory=list)

    def _out(self, frame: bytes) -> bytes:
        # Negotiated compression applies at or above 256 bytes (DESIGN §2).
        return gzip.compress(frame) if self.compression == "gzip" and len(frame) >= 256 else frame

    async def handler(self, ws: WsServerConn) -> None:
        try:
            await self._serve(ws)
        except ConnectionClosed:
            pass
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)
            raise

    async def _serve(self, ws: WsServerConn) -> None:
        first = await ws.recv()
        assert isinstance(first, bytes) and first[:1] == b"{", first  # unforced: plain JSON
        connect = decode(first)
        self.received.append(connect)
        assert connect.system_type == CONNECT
        assert connect.meta("format") == "json" and connect.body["format"] == JSON
        enc = Enc(self.ack_format)
        await ws.send(
            enc.system(
                CONNECT_ACK, fmt=enc.number, metadata={"compression": self.compression.encode()},
                ident="ack-1",
            )
        )  # fmt: skip
        pushed = 0
        async for message in ws:
            assert isinstance(message, bytes)
            self.raw.append(message)
            frame = decode(message)
            self.received.append(frame)
            if frame.system_type == PING:
                await ws.send(enc.system(PONG, ident=f"pong-{len(self.raw)}"))
                self.pinged.set()
            elif frame.system_type == CLOSE:
                self.closes.set()
            elif frame.kind == "message" and frame.body["type"] == SEND:
                await ws.send(enc.message(ACK, frame.body["message_id"], ident="a"))
                if frame.body["payload"] == b"hi":
                    pushed += 1
                    push = enc.message(
                        SEND, f"push-{pushed}", "from the server ✓".encode() * 20,
                        metadata={"from": b"server"}, ident=f"push-{pushed}",
                    )  # fmt: skip
                    await ws.send(self._out(push))


@asynccontextmanager
async def hand_server(ack_format: str, compression: str) -> AsyncIterator[tuple[HandServer, str]]:
    state = HandServer(ack_format, compression)
    async with ws_serve(state.handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield state, f"ws://127.0.0.1:{port}"
    assert not state.errors, state.errors


@pytest.mark.parametrize(("ack_format", "compression"), [("protobuf", "none"), ("json", "gzip")])
async def test_flare_client_against_websockets_server(ack_format: str, compression: str) -> None:
    config = ClientConfig(heartbeat_interval=0.2)
    with anyio.fail_after(10):
        async with hand_server(ack_format, compression) as (server, url):
            client = Client([url], config, reconnect=False)
            async with client:
                with anyio.fail_after(5):
                    await client.wait_connected()
                assert client.state is ConnectionState.CONNECTED
                ident = await client.send(b"hi")
                big = await client.send(b"x" * 1000)  # crosses the compression threshold

                push = None
                async for event in client:
                    if isinstance(event, FrameReceived):
                        push = event.frame
                        break
                    assert isinstance(event, StateChanged), event
                assert push is not None
                assert push.command.message.payload == "from the server ✓".encode() * 20
                assert push.command.message.metadata["from"] == b"server"
                assert push.command.message.message_id == "push-1"

                await server.pinged.wait()  # the heartbeat runs; our PONG gives an RTT
                with anyio.fail_after(2):
                    while client.rtt is None:
                        await anyio.sleep(0.02)
            with anyio.fail_after(3):
                await server.closes.wait()  # aclose() sent CLOSE before closing

    sends = [f for f in server.received if f.kind == "message" and f.body["type"] == SEND]
    assert [f.body["message_id"] for f in sends] == [ident, big]
    assert sends[0].body["payload"] == b"hi"
    assert sends[1].body["payload"] == b"x" * 1000
    # After CONNECT_ACK the client speaks what the server chose.
    assert all(f.encoding == ack_format for f in server.received[1:])
    big_raw = next(r for r, f in zip(server.raw, server.received[1:], strict=True) if f is sends[1])
    assert (big_raw[:2] == b"\x1f\x8b") == (compression == "gzip")
