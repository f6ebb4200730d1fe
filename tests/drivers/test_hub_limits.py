"""Hub fixes that CHANGELOG.md lists (issue 5 review), over real loopback sockets on asyncio
and trio: the outbound queue's byte bound (32 MiB, ``slow_consumer``), ``on_connect`` hooks
that fail, and ``on_disconnect`` hooks when the server shuts down or is cancelled."""

from __future__ import annotations

import logging
import operator
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any, Literal

import anyio
import anyio.abc
import pytest

from flare_drivers._client import Client, ConnectionState
from flare_drivers._hub import Accept, Connection, Hub, Reject
from flare_drivers._loop import ConnectionDriver
from flare_drivers._quic import connect_quic
from flare_drivers._transport import Transport
from flare_drivers._websocket import connect_websocket
from flare_proto import (
    ClientConfig,
    ClientConnection,
    CloseCode,
    CommandKind,
    Compression,
    ConnectRequest,
    Format,
    Frame,
    FrameReceived,
    Framing,
)

from .hubtools import running, url, wait_for

pytestmark = pytest.mark.anyio

Kind = Literal["ws", "quic"]
KINDS: list[Kind] = ["ws", "quic"]
MiB = 1024 * 1024
Stopper = Callable[[], Awaitable[None]]
FAST: dict[str, Any] = {
    "race_stagger": 0.25,
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
    "quic_verify": False,
}
# The hub does not pass a byte bound to its drivers: theirs is ConnectionDriver's default.
QUEUE_BYTES: int = (ConnectionDriver.__init__.__kwdefaults__ or {})["max_queue_bytes"]


async def next_frame(client: Client, timeout: float = 5.0) -> Frame:
    """The next frame the client receives (bounded)."""
    with anyio.fail_after(timeout):
        async for event in client:
            if isinstance(event, FrameReceived):
                return event.frame
    raise AssertionError("client ended without a frame")


async def check_working(hub: Hub, client: Client, received: list[bytes], tag: str) -> None:
    """``client`` is still on its first connection and it works both ways: a SEND is
    handled and ACKed, and a SEND from the server arrives."""
    assert client.state is ConnectionState.CONNECTED
    payload = f"still fine: {tag}".encode()
    with anyio.fail_after(5):
        await client.send(payload)
    assert payload in received
    conns = [c for c in hub.accepted() if c.user_id == tag]
    assert len(conns) == 1, conns
    conns[0].send_message(b"back to " + tag.encode())
    frame = await next_frame(client)
    assert frame.command.message.payload == b"back to " + tag.encode()


async def silent_peer(bound: dict[str, str], kind: Kind) -> Transport:
    """A peer that completes the handshake and then never reads again."""
    transport: Transport
    if kind == "ws":
        transport = await connect_websocket(url(bound, "ws"))
        framing = Framing.MESSAGE
    else:
        transport = await connect_quic(url(bound, "quic"), verify=False)
        framing = Framing.STREAM
    # Uncompressed, so every byte the server queues for it counts at its size.
    config = ClientConfig(format=Format.PROTOBUF, compression=Compression.NONE, user_id="silent")
    core = ClientConnection(config, framing=framing)
    core.connect(0.0)
    await transport.send(core.data_to_send())
    return transport


# -- (a) the outbound queue is bounded by bytes --------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_queue_byte_bound_closes_a_slow_consumer_others_unaffected(kind: Kind) -> None:
    """CHANGELOG: "The outbound queue was bounded by batch count only (1,024 batches of up
    to 10 MiB); it is now also bounded by bytes (32 MiB) before slow_consumer."

    A peer that stops reading is sent 1 MiB SENDs one at a time, each its own batch: the
    connection is closed with slow_consumer once about 32 MiB are queued (not before, and
    long before the 1,024-batch bound), while clients on both transports keep working on
    their first connection. (The hub's byte bound is not configurable: this runs with the
    real default.)"""
    assert 32 * MiB == QUEUE_BYTES
    hub = Hub()
    assert hub.max_queue == 1024
    received: list[bytes] = []
    gone: list[tuple[str | None, CloseCode | None]] = []

    @hub.router.on(CommandKind.SEND)
    async def record(conn: Connection, frame: Frame) -> None:
        received.append(frame.command.message.payload)

    @hub.on_disconnect
    async def left(conn: Connection) -> None:
        gone.append((conn.user_id, conn.core.close_code))

    payload = bytes(MiB)
    with anyio.fail_after(60):
        async with running(hub, KINDS) as bound:
            raw = await silent_peer(bound, kind)
            await wait_for(lambda: len(list(hub.accepted())) == 1)
            (slow,) = hub.accepted()
            healthy = {
                k: Client([url(bound, k)], ClientConfig(user_id=k), reconnect=False, **FAST)
                for k in KINDS
            }
            async with healthy["ws"], healthy["quic"]:
                for client in healthy.values():
                    await client.wait_connected()
                sent = 0
                while not slow.core.closed and sent < 200:
                    slow.send_message(payload)  # one batch each
                    sent += 1
                    await anyio.sleep(0)  # the writer gets its turn: only the peer lags
                assert slow.core.close_code is CloseCode.SLOW_CONSUMER, (sent, slow.core)
                # Not before the byte bound was reached...
                assert sent >= QUEUE_BYTES // len(payload), sent
                # ... nor by the batch bound, nor unbounded: what the kernel buffers (a few
                # MiB) on top of 32 MiB, far below 1,024 batches.
                assert sent < 2 * QUEUE_BYTES // len(payload), sent
                await wait_for(lambda: slow.id not in hub.connections, timeout=15)
                for kind_, client in healthy.items():
                    await check_working(hub, client, received, kind_)
            with anyio.move_on_after(2):
                await raw.aclose(None, "")
            await wait_for(lambda: len(gone) == 3)
    assert ("silent", CloseCode.SLOW_CONSUMER) in gone


# -- (b) a failing on_connect hook ---------------------------------------------------------


async def accept_all(request: ConnectRequest) -> Accept | Reject:
    await anyio.sleep(0)  # a real authenticator awaits something
    return Accept(user_id=request.user_id)


@pytest.mark.parametrize("authenticate", [False, True], ids=["no_auth", "auth"])
@pytest.mark.parametrize("kind", KINDS)
async def test_failing_on_connect_hook_is_logged_and_the_connection_stays(
    kind: Kind, authenticate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """CHANGELOG: "A failing on_connect hook killed the connection without a code ...;
    hooks are now isolated."

    The first on_connect hook raises: it is logged with its traceback, the next hook still
    runs, the connection stays open and works both ways (no reconnect: ``reconnect=False``),
    and the server keeps accepting others; on_disconnect still runs for it, with the
    client's normal close (no code). Without an authenticator the hooks run in the read
    loop; with one, in the task beside it: both paths."""
    caplog.set_level(logging.ERROR, logger="flare.server")
    hub = Hub(authenticator=accept_all if authenticate else None)
    calls: list[str] = []
    received: list[bytes] = []
    gone: list[tuple[str | None, CloseCode | None]] = []

    @hub.on_connect
    async def broken(conn: Connection) -> None:
        calls.append(f"broken {conn.user_id}")
        await anyio.sleep(0)
        raise RuntimeError("on_connect hook bug")

    @hub.on_connect
    async def after(conn: Connection) -> None:
        calls.append(f"after {conn.user_id}")

    @hub.on_disconnect
    async def left(conn: Connection) -> None:
        gone.append((conn.user_id, conn.core.close_code))

    @hub.router.on(CommandKind.SEND)
    async def record(conn: Connection, frame: Frame) -> None:
        received.append(frame.command.message.payload)

    with anyio.fail_after(30):
        async with running(hub, [kind]) as bound:
            for user in ("ann", "ben"):
                config = ClientConfig(user_id=user)
                async with Client([url(bound, kind)], config, reconnect=False, **FAST) as client:
                    await client.wait_connected()
                    await wait_for(partial(operator.contains, calls, f"after {user}"))
                    await check_working(hub, client, received, user)
                    assert client.state is ConnectionState.CONNECTED
                await wait_for(partial(operator.contains, gone, (user, None)))
    assert calls == ["broken ann", "after ann", "broken ben", "after ben"]
    assert gone == [("ann", None), ("ben", None)]
    failures = [r for r in caplog.records if "on_connect hook failed" in r.getMessage()]
    assert len(failures) == 2, caplog.text
    for record_ in failures:
        assert record_.exc_info is not None and isinstance(record_.exc_info[1], RuntimeError)


# -- (c) on_disconnect hooks at shutdown ---------------------------------------------------


def disconnect_hooks(hub: Hub, log: list[str], *, hang: str | None = None) -> None:
    """Three on_disconnect hooks: one that awaits before recording (it would be cancelled
    at once if not shielded), one that fails, one that records after it. ``hang``: the
    first hook never returns for this user id (until cancelled, which it records)."""

    @hub.on_disconnect
    async def cleanup(conn: Connection) -> None:
        if conn.user_id == hang:
            try:
                await anyio.sleep_forever()
            finally:
                log.append(f"cut {conn.user_id}")
        await anyio.sleep(0.05)
        log.append(f"cleaned {conn.user_id} {conn.core.close_code}")

    @hub.on_disconnect
    async def failing(conn: Connection) -> None:
        raise RuntimeError("on_disconnect hook bug")

    @hub.on_disconnect
    async def last(conn: Connection) -> None:
        log.append(f"last {conn.user_id}")


@asynccontextmanager
async def background_server(hub: Hub) -> AsyncIterator[tuple[dict[str, str], Stopper]]:
    """``running(hub)`` in a task of its own, so that the test can cancel the serving task
    (``await stop()``: cancel it and wait until it has finished) while its clients, whose
    task groups must nest inside ours, stay open."""
    scope = anyio.CancelScope()
    finished = anyio.Event()

    async def serve(*, task_status: anyio.abc.TaskStatus[dict[str, str]]) -> None:
        try:
            with scope:
                async with running(hub, KINDS) as bound:
                    task_status.started(bound)
                    await anyio.sleep_forever()
        finally:
            finished.set()

    async def stop() -> None:
        scope.cancel()
        await finished.wait()

    async with anyio.create_task_group() as tg:
        bound = await tg.start(serve)
        try:
            yield bound, stop
        finally:
            scope.cancel()


async def connect_clients(
    stack: AsyncExitStack, bound: dict[str, str], users: dict[str, Kind]
) -> dict[str, Client]:
    clients = {}
    for user, kind in users.items():
        config = ClientConfig(user_id=user)
        client = Client([url(bound, kind)], config, reconnect=False, **FAST)
        clients[user] = await stack.enter_async_context(client)
    for client in clients.values():
        await client.wait_connected()
    return clients


USERS: dict[str, Kind] = {"ws-1": "ws", "ws-2": "ws", "quic-1": "quic", "quic-2": "quic"}


async def test_on_disconnect_hooks_run_when_the_server_is_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CHANGELOG: "on_disconnect hooks were skipped on cancellation (shutdown); ...
    on_disconnect runs shielded and bounded."

    The serving task is cancelled (``running`` exits) with four accepted connections over
    WebSocket and QUIC: every connection's on_disconnect hooks run to the end, including a
    hook that awaits, and a failing hook neither stops the next one nor the shutdown."""
    caplog.set_level(logging.ERROR, logger="flare.server")
    hub = Hub()
    log: list[str] = []
    disconnect_hooks(hub, log)
    with anyio.fail_after(30):
        async with background_server(hub) as (bound, stop), AsyncExitStack() as stack:
            await connect_clients(stack, bound, USERS)
            await wait_for(lambda: len(list(hub.accepted())) == len(USERS))
            assert not log
            await stop()  # the serving task is cancelled, and has finished
            assert not hub.connections
    assert sorted(log) == sorted(
        [f"cleaned {u} None" for u in USERS] + [f"last {u}" for u in USERS]
    )
    failures = [r for r in caplog.records if "on_disconnect hook failed" in r.getMessage()]
    assert len(failures) == len(USERS), caplog.text


async def test_on_disconnect_hook_that_hangs_is_bounded_at_cancellation() -> None:
    """A hook that never returns is cut after ``hook_timeout`` (the server's cancellation
    still completes); the hooks of the other connections run in full."""
    hub = Hub(hook_timeout=0.5)
    log: list[str] = []
    disconnect_hooks(hub, log, hang="ws-1")
    with anyio.fail_after(30):
        async with background_server(hub) as (bound, stop), AsyncExitStack() as stack:
            await connect_clients(stack, bound, USERS)
            await wait_for(lambda: len(list(hub.accepted())) == len(USERS))
            await stop()
    others = [u for u in USERS if u != "ws-1"]
    # The hung hook was cancelled by the bound; the hooks after it on that connection
    # share the bound (skipped), every other connection's ran.
    assert sorted(log) == sorted(
        ["cut ws-1"] + [f"cleaned {u} None" for u in others] + [f"last {u}" for u in others]
    )


async def test_on_disconnect_hooks_run_at_graceful_shutdown() -> None:
    """``Hub.shutdown()`` then the serving task cancelled (what ``flare serve`` does on
    SIGTERM): every connection gets CLOSE server_shutdown, and its on_disconnect hooks all
    run, seeing that code, by the time the server has stopped (and by the time
    ``shutdown()`` returns: the test below)."""
    hub = Hub()
    log: list[str] = []
    disconnect_hooks(hub, log)
    with anyio.fail_after(30):
        async with background_server(hub) as (bound, stop), AsyncExitStack() as stack:
            clients = await connect_clients(stack, bound, USERS)
            await wait_for(lambda: len(list(hub.accepted())) == len(USERS))
            await hub.shutdown(grace=10)
            assert not hub.connections
            await stop()
            assert sorted(log) == sorted(
                [f"cleaned {u} {CloseCode.SERVER_SHUTDOWN}" for u in USERS]
                + [f"last {u}" for u in USERS]
            )
            await wait_for(lambda: all(c.state is ConnectionState.CLOSED for c in clients.values()))
            assert all(c.close_code is CloseCode.SERVER_SHUTDOWN for c in clients.values())


async def test_shutdown_returns_after_every_on_disconnect_hook() -> None:
    """Two connections; both hooks start (a barrier: both connections have left the
    table), then ``fast`` returns at once and ``slow`` takes 0.3 s more. ``shutdown()``,
    which waits "for them to end", returns after both hooks (it returned after the first:
    connections leave the table before their hooks run)."""
    hub = Hub()
    started: list[str] = []
    finished: list[str] = []
    both = anyio.Event()

    @hub.on_disconnect
    async def hook(conn: Connection) -> None:
        started.append(str(conn.user_id))
        if len(started) == 2:
            both.set()
        with anyio.fail_after(5):
            await both.wait()
        if conn.user_id == "slow":
            await anyio.sleep(0.3)
        finished.append(str(conn.user_id))

    with anyio.fail_after(30):
        async with running(hub, ["ws"]) as bound, AsyncExitStack() as stack:
            await connect_clients(stack, bound, {"fast": "ws", "slow": "ws"})
            await wait_for(lambda: len(list(hub.accepted())) == 2)
            await hub.shutdown(grace=10)
            returned_with = sorted(finished)
    assert returned_with == ["fast", "slow"]
