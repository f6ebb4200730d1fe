"""Run a :class:`Hub` on several listeners at once (WS, WSS, QUIC), with graceful shutdown."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.abc

from ._hub import Hub

log = logging.getLogger("flare.server")


ListenerKind = Literal["ws", "wss", "quic"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """One address to listen on. ``wss`` needs ``certfile``/``keyfile``; ``quic`` uses them
    when given, else a self-signed certificate generated in memory."""

    kind: ListenerKind
    host: str = "127.0.0.1"
    port: int = 0
    certfile: str | None = None
    keyfile: str | None = None
    alpn: Sequence[str] | None = None
    idle_timeout: float | None = None
    """QUIC idle timeout; default: 30 s above the hub's idle timeout, at least 120 s (B25)."""
    handshake_timeout: float = 10.0
    """TLS + WebSocket upgrade, or QUIC handshake + first stream data, must finish within
    this many seconds, or the socket is dropped (before flare's own ``auth_timeout``)."""


class ListenError(OSError):
    """A listener could not start (its address in use or not available, its certificate
    unreadable...): names the listener, keeps the cause's ``errno``."""

    def __init__(self, spec: Listener, cause: OSError) -> None:
        detail = cause.strerror or str(cause)
        if cause.filename is not None:
            detail = f"{detail}: {cause.filename}"
        message = f"cannot listen on {spec.kind} {spec.host}:{spec.port}: {detail}"
        if cause.errno is None:
            super().__init__(message)
        else:
            super().__init__(cause.errno, message)


async def serve(
    hub: Hub,
    listeners: Sequence[Listener],
    *,
    task_status: anyio.abc.TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` on every listener until cancelled; reports ``{kind: "host:port"}``
    (the bound addresses, e.g. for port 0) through ``task_status`` once all listen.
    Raises :class:`ListenError` (an ``OSError``) when a listener cannot start."""
    # The transport hands over at most max_frame + 1 bytes; the core rejects the excess.
    max_message = hub.config.limits.max_frame
    bound: dict[str, str] = {}
    async with anyio.create_task_group() as tg:
        for spec in listeners:
            try:
                bound[spec.kind] = await _start(tg, hub, spec, max_message)
            except OSError as exc:
                # Name the listener: a bind error alone does not say which address.
                raise ListenError(spec, exc) from exc
            log.info("listening: %s %s", spec.kind, bound[spec.kind])
        task_status.started(bound)


async def _start(tg: anyio.abc.TaskGroup, hub: Hub, spec: Listener, max_message: int) -> str:
    """Start one listener in ``tg``; returns its bound ``host:port``."""
    from ._quic import serve_quic
    from ._tls import load_pem_files, server_context
    from ._websocket import serve_websocket

    if spec.kind in ("ws", "wss"):
        context = None
        if spec.kind == "wss":
            if not (spec.certfile and spec.keyfile):
                raise ValueError("wss needs certfile and keyfile")
            context = server_context(load_pem_files(spec.certfile, spec.keyfile))
        address: str = await tg.start(
            lambda task_status: serve_websocket(
                hub.handle_transport,
                host=spec.host,
                port=spec.port,
                ssl_context=context,
                max_message=max_message,
                handshake_timeout=spec.handshake_timeout,
                task_status=task_status,
            )
        )
        return address
    # Above the hub's own idle deadline, so the core closes first, with a code.
    idle = spec.idle_timeout or max(120.0, hub.config.idle_timeout + 30.0)
    address = await tg.start(
        lambda task_status: serve_quic(
            hub.handle_transport,
            host=spec.host,
            port=spec.port,
            certfile=spec.certfile,
            keyfile=spec.keyfile,
            alpn=spec.alpn,
            idle_timeout=idle,
            handshake_timeout=spec.handshake_timeout,
            task_status=task_status,
        )
    )
    return address
