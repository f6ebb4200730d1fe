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


async def serve(
    hub: Hub,
    listeners: Sequence[Listener],
    *,
    task_status: anyio.abc.TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` on every listener until cancelled; reports ``{kind: "host:port"}``
    (the bound addresses, e.g. for port 0) through ``task_status`` once all listen."""
    from ._quic import serve_quic
    from ._tls import load_pem_files, server_context
    from ._websocket import serve_websocket

    # The transport hands over at most max_frame + 1 bytes; the core rejects the excess.
    max_message = hub.config.limits.max_frame
    bound: dict[str, str] = {}
    async with anyio.create_task_group() as tg:
        for spec in listeners:
            if spec.kind in ("ws", "wss"):
                context = None
                if spec.kind == "wss":
                    if not (spec.certfile and spec.keyfile):
                        raise ValueError("wss needs certfile and keyfile")
                    context = server_context(load_pem_files(spec.certfile, spec.keyfile))
                address = await tg.start(
                    lambda task_status, s=spec, c=context: serve_websocket(
                        hub.handle_transport,
                        host=s.host,
                        port=s.port,
                        ssl_context=c,
                        max_message=max_message,
                        handshake_timeout=s.handshake_timeout,
                        task_status=task_status,
                    )
                )
            else:
                # Above the hub's own idle deadline, so the core closes first, with a code.
                idle = spec.idle_timeout or max(120.0, hub.config.idle_timeout + 30.0)
                address = await tg.start(
                    lambda task_status, s=spec, i=idle: serve_quic(
                        hub.handle_transport,
                        host=s.host,
                        port=s.port,
                        certfile=s.certfile,
                        keyfile=s.keyfile,
                        alpn=s.alpn,
                        idle_timeout=i,
                        handshake_timeout=s.handshake_timeout,
                        task_status=task_status,
                    )
                )
            bound[spec.kind] = address
            log.info("listening: %s %s", spec.kind, address)
        task_status.started(bound)
