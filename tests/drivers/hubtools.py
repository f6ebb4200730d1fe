"""Shared helpers for driver tests: a hub running on loopback listeners."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from flare_drivers._hub import Hub
from flare_drivers._serve import Listener, ListenerKind, serve
from flare_drivers._tcp import TcpStream, accept_ready, connect_tcp


@asynccontextmanager
async def running(
    hub: Hub, kinds: Sequence[ListenerKind] = ("ws", "quic"), **listener: object
) -> AsyncIterator[dict[str, str]]:
    """Serve ``hub`` on 127.0.0.1 port 0 for each kind; yields ``{kind: "host:port"}``."""
    specs = [Listener(kind=k, **listener) for k in kinds]  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        bound = await tg.start(serve, hub, specs)
        try:
            yield bound
        finally:
            tg.cancel_scope.cancel()


def url(bound: dict[str, str], kind: str) -> str:
    """The client URL for a bound listener."""
    return f"{kind}://{bound[kind]}"


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate()`` until true (bounded)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def stream_pair() -> tuple[TcpStream, TcpStream]:
    """A connected pair of flare's TCP streams on loopback: (client, server)."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    try:
        with anyio.fail_after(5):
            client = await connect_tcp("127.0.0.1", listening.getsockname()[1])
            (accepted,) = await accept_ready(listening)
    finally:
        listening.close()
    return client, TcpStream(accepted)


def ws_pair() -> tuple[WSConnection, WSConnection]:
    """A wsproto client and server past the opening handshake."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    return client, server
