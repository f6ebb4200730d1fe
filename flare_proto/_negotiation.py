"""CONNECT: how a client builds it and how a server reads it and decides (DESIGN §3).

The client says what it wants in the CONNECT SystemCommand: format in metadata ``format``
(else the ``format`` field), compression in metadata ``compression``, ``force_format:
"true"`` to insist. The server decides with :func:`decide`, which never looks at anything
but the request and its own :class:`ServerConfig`, so it is trivially testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._codes import CloseCode
from ._config import ClientConfig, ServerConfig
from ._device_info import DeviceInfo, Platform
from ._frames import CONNECT, meta_text, system_frame
from ._pb.frame_pb2 import Frame
from ._types import Compression, Format

# Keys with a protocol meaning; everything else in CONNECT metadata is "extra" (§5.1).
# ``token`` is among them so it never reaches device metadata or logs (B4).
PROTOCOL_KEYS = frozenset(
    {
        "format",
        "compression",
        "encryption",
        "force_format",
        "device_id",
        "platform",
        "model",
        "app_version",
        "system_version",
        "user_id",
        "token",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectRequest:
    """What a client asked for in its CONNECT, as the server read it.

    ``format``/``compression`` are ``None`` when the client named something unknown
    (``format_name``/``compression_name`` keep the raw text). ``token`` is excluded from
    ``repr`` so logging a request never leaks it (B4).
    """

    format: Format | None
    format_name: str
    compression: Compression | None
    compression_name: str
    forced: bool
    device: DeviceInfo | None
    user_id: str | None
    token: str | None = field(repr=False)
    metadata: Mapping[str, str]
    """Non-protocol CONNECT metadata (never contains the token)."""


def parse_connect(frame: Frame) -> ConnectRequest:
    """Read a CONNECT frame's SystemCommand into a :class:`ConnectRequest` (never raises)."""
    system = frame.command.system
    meta = system.metadata
    format_text = meta_text(meta, "format")
    if format_text is not None:
        fmt = Format.parse(format_text)
        format_name = format_text
    else:
        # No metadata: the v0.1.2 rule, the SystemCommand ``format`` field (B8).
        number = int(system.format)
        fmt = Format(number) if number in (0, 1) else None
        format_name = str(number) if fmt is None else fmt.wire_name
    compression_name = meta_text(meta, "compression") or "none"
    device_id = meta_text(meta, "device_id")
    extra = {
        key: value.decode("utf-8", "replace")
        for key, value in meta.items()
        if key not in PROTOCOL_KEYS
    }
    device = None
    if device_id is not None:
        device = DeviceInfo(
            device_id=device_id,
            platform=Platform.parse(meta_text(meta, "platform") or "unknown"),
            model=meta_text(meta, "model") or "",
            app_version=meta_text(meta, "app_version") or "",
            system_version=meta_text(meta, "system_version") or "",
            extra=extra,
        )
    return ConnectRequest(
        format=fmt,
        format_name=format_name,
        compression=Compression.parse(compression_name),
        compression_name=compression_name,
        forced=meta.get("force_format") == b"true",
        device=device,
        user_id=meta_text(meta, "user_id") or None,
        token=meta_text(meta, "token"),
        metadata=extra,
    )


def decide(request: ConnectRequest, config: ServerConfig) -> tuple[Format, Compression] | CloseCode:
    """The server's choice of encoding, or the close code refusing a forced request.

    Forced: exactly the client's choice or ``unsupported_*``. Unforced with
    ``prefer="client"``: the client's choice where enabled, else the server default.
    ``prefer="server"``: the server defaults (the original's v0.1.2 rule).
    """
    if request.forced:
        if request.format is None or request.format not in config.formats:
            return CloseCode.UNSUPPORTED_FORMAT
        if request.compression is None or request.compression not in config.compressions:
            return CloseCode.UNSUPPORTED_COMPRESSION
        return request.format, request.compression
    fmt, comp = config.default_format, config.default_compression
    if config.prefer == "client":
        if request.format is not None and request.format in config.formats:
            fmt = request.format
        if request.compression is not None and request.compression in config.compressions:
            comp = request.compression
    return fmt, comp


def connect_metadata(config: ClientConfig) -> dict[str, str]:
    """The CONNECT metadata a client sends (reference §5.1); user metadata is merged last."""
    meta: dict[str, str] = {
        "format": config.format.wire_name,
        "compression": config.compression.value,
    }
    if config.force:
        meta["force_format"] = "true"
    if config.device is not None:
        meta.update(config.device.to_metadata())
    if config.user_id is not None:
        meta["user_id"] = config.user_id
    if config.token is not None:
        meta["token"] = config.token
    meta.update(config.metadata)
    return meta


def connect_frame(config: ClientConfig, *, message_id: str, timestamp: int) -> Frame:
    """The CONNECT frame for ``config``: ``format`` field and metadata both name the format."""
    return system_frame(
        CONNECT,
        message_id=message_id,
        timestamp=timestamp,
        format=int(config.format),
        metadata=connect_metadata(config),
    )
