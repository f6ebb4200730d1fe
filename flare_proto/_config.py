"""Frozen, validated configuration objects. Limits are configuration, never globals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._device_info import DeviceInfo
from ._errors import LocalProtocolError
from ._types import Compression, Format

MiB = 1024 * 1024


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise LocalProtocolError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size and count limits shared by both sides (DESIGN.md §6)."""

    max_frame: int = 10 * MiB
    """Largest frame accepted (stream length prefix or transport message), in bytes."""
    max_decompressed: int = 16 * MiB
    """Largest decompressed frame; checked before the output is allocated."""
    max_held_frames: int = 64
    """Frames held between CONNECT and the auth verdict; one more is a protocol error."""
    max_held_bytes: int | None = None
    """Total size of those held frames (decoded, as protobuf); more is a protocol error.
    ``None``: ``max_decompressed``, so one largest frame still fits (16 MiB with the
    defaults). Without it an unauthenticated connection could make the server hold
    ``max_held_frames`` × ``max_decompressed`` (1 GiB) until ``auth_timeout``."""
    max_undecodable: int = 8
    """Undecodable frames in a row that close the connection with ``protocol_error``."""

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_decompressed", "max_held_frames", "max_undecodable"):
            _positive(name, getattr(self, name))
        if self.max_held_bytes is not None:
            _positive("max_held_bytes", self.max_held_bytes)

    @property
    def held_bytes(self) -> int:
        """The effective ``max_held_bytes``."""
        return self.max_decompressed if self.max_held_bytes is None else self.max_held_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CodecOptions:
    """How frames are compressed once a compression is negotiated."""

    compress_min_bytes: int = 256
    """Frames shorter than this are sent uncompressed (receivers detect by magic)."""
    gzip_level: int = 6
    zstd_level: int = 3

    def __post_init__(self) -> None:
        if self.compress_min_bytes < 0:
            raise LocalProtocolError("compress_min_bytes must be >= 0")
        if not 0 <= self.gzip_level <= 9:
            raise LocalProtocolError("gzip_level must be in 0..9")
        if not 1 <= self.zstd_level <= 22:
            raise LocalProtocolError("zstd_level must be in 1..22")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Server-side protocol settings (DESIGN.md §3, §4, §6)."""

    formats: frozenset[Format] = frozenset(Format)
    """Formats this server enables."""
    compressions: frozenset[Compression] = frozenset(Compression)
    """Compressions this server enables (``none`` must be among them)."""
    default_format: Format = Format.PROTOBUF
    default_compression: Compression = Compression.NONE
    prefer: Literal["client", "server"] = "client"
    """Unforced negotiation: the client's choice when enabled (``client``), or always the
    server default (``server``, the original's v0.1.2 rule)."""
    auth_timeout: float = 30.0
    """Seconds from transport open to an accept/reject verdict (also: to CONNECT)."""
    idle_timeout: float = 300.0
    """Seconds without any inbound frame before the server closes the connection."""
    limits: Limits = field(default_factory=Limits)
    codec: CodecOptions = field(default_factory=CodecOptions)

    def __post_init__(self) -> None:
        _positive("auth_timeout", self.auth_timeout)
        _positive("idle_timeout", self.idle_timeout)
        if self.default_format not in self.formats:
            raise LocalProtocolError("default_format must be one of formats")
        if self.default_compression not in self.compressions:
            raise LocalProtocolError("default_compression must be one of compressions")
        if Compression.NONE not in self.compressions:
            raise LocalProtocolError("compressions must include none")
        if self.prefer not in ("client", "server"):
            raise LocalProtocolError("prefer must be 'client' or 'server'")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Client-side protocol settings (DESIGN.md §3.1, §4, §5)."""

    format: Format = Format.JSON
    """Preferred (or, with ``force``, required) format. v0.1.2 clients default to JSON."""
    compression: Compression = Compression.NONE
    force: bool = False
    """Send ``force_format: "true"``: the server must use exactly this format/compression."""
    device: DeviceInfo | None = None
    user_id: str | None = None
    """Claimed user id; the server's authenticator has the last word."""
    token: str | None = field(default=None, repr=False)
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Extra CONNECT metadata; merged last, so it may override the keys above."""
    heartbeat_interval: float = 30.0
    background_interval: float = 120.0
    heartbeat_timeout: float = 90.0
    handshake_timeout: float = 40.0
    """Seconds to wait for CONNECT_ACK; above the server's 30 s ``auth_timeout`` so the
    server's own ``auth_timeout`` ERROR normally arrives first."""
    ack_timeout: float = 10.0
    """Seconds a SEND waits for its ACK before it is reported as failed."""
    limits: Limits = field(default_factory=Limits)
    codec: CodecOptions = field(default_factory=CodecOptions)

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "background_interval",
            "heartbeat_timeout",
            "handshake_timeout",
            "ack_timeout",
        ):
            _positive(name, getattr(self, name))
