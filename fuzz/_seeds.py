"""Seed material: the golden vectors and the handshake frames every harness starts from.

The golden vectors are read from ``tests/vectors/frames.json`` (the repository's copy of
the shared file): each frame's protobuf and JSON bytes, the compressed samples and the
length-prefixed stream. To those we add CONNECT, CONNECT_ACK and PING frames produced by the
cores themselves, in every format and compression. Each harness turns this material into
inputs in its own layout (its ``seeds()`` function). Nothing here is random.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from flare_proto import (
    ClientConfig,
    ClientConnection,
    CodecOptions,
    Compression,
    Format,
    SequentialIds,
    ServerConfig,
    ServerConnection,
    encode_frame,
    system_frame,
)

__all__ = [
    "ALWAYS_COMPRESS",
    "VECTORS_PATH",
    "connect_ack_bytes",
    "connect_bytes",
    "handshake_frames",
    "vector_compressed",
    "vector_frames",
    "vector_stream",
]

VECTORS_PATH = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "frames.json"
"""The golden vectors file the seeds come from."""

ALWAYS_COMPRESS = CodecOptions(compress_min_bytes=0)
"""Compress every frame, however small, when a compression is asked for."""

_PING = 4


@functools.cache
def _vectors() -> dict[str, Any]:
    if not VECTORS_PATH.exists():  # e.g. fuzz/ copied elsewhere: the generated seeds remain
        return {"frames": [], "compressed": [], "length_prefixed_stream": {"hex": ""}}
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text("utf-8"))
    return data


@functools.cache
def vector_frames() -> tuple[bytes, ...]:
    """Every golden frame, as its protobuf bytes and as its JSON bytes."""
    out: list[bytes] = []
    for vector in _vectors()["frames"]:
        out.append(bytes.fromhex(vector["protobuf_hex"]))
        out.append(vector["json"].encode("utf-8"))
    return tuple(out)


@functools.cache
def vector_compressed() -> tuple[bytes, ...]:
    """The golden compressed samples (gzip and zstd, protobuf and JSON inside)."""
    return tuple(bytes.fromhex(v["compressed_hex"]) for v in _vectors()["compressed"])


@functools.cache
def vector_stream() -> bytes:
    """The golden length-prefixed stream (a PING and a big SEND behind 4-byte lengths)."""
    return bytes.fromhex(_vectors()["length_prefixed_stream"]["hex"])


@functools.cache
def connect_bytes(fmt: Format, compression: Compression, force: bool) -> bytes:
    """The CONNECT a :class:`ClientConnection` sends for this configuration (one message)."""
    config = ClientConfig(
        format=fmt,
        compression=compression,
        force=force,
        user_id="fuzz-user",
        token="t0k",
        metadata={"device_id": "dev-1", "platform": "ios"},
    )
    client = ClientConnection(config, ids=SequentialIds(wall_offset=1_730_000_000.0))
    client.connect(1000.0)
    (data,) = client.data_to_send()
    return data


@functools.cache
def connect_ack_bytes(fmt: Format, compression: Compression, force: bool) -> bytes:
    """The CONNECT_ACK a default :class:`ServerConnection` answers that CONNECT with."""
    server = ServerConnection(ServerConfig(), now=1000.0, ids=SequentialIds(1_730_000_000.0))
    server.receive_message(connect_bytes(fmt, compression, force), 1000.0)
    server.events_received()
    server.accept(1000.0, user_id="fuzz-user", conflict_connections=("c-1", "c-2"))
    (data,) = server.data_to_send()
    return data


@functools.cache
def handshake_frames() -> tuple[bytes, ...]:
    """CONNECT and CONNECT_ACK for every format, compression and force, and PING frames in
    every format and compression."""
    out: list[bytes] = []
    for fmt in Format:
        for compression in Compression:
            for force in (False, True):
                out.append(connect_bytes(fmt, compression, force))
                out.append(connect_ack_bytes(fmt, compression, force))
            ping = system_frame(_PING, message_id="1730000000000-0000000000000009", timestamp=1)
            out.append(encode_frame(ping, fmt, compression, ALWAYS_COMPRESS))
    return tuple(dict.fromkeys(out))  # unique, order kept
