"""Driver regressions found in review: each test names the failure it guards against."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from flare_drivers import Client, ClientClosed, ConnectionState, Hub, RaceFailed, SendFailed, race
from flare_drivers._hub import Accept, Connection, Reject
from flare_drivers._websocket import connect_websocket
from flare_proto import (
    ClientConfig,
    ClientConnection,
    CloseCode,
    CommandKind,
    ConnectRequest,
    Format,
    Frame,
    Framing,
    ServerConfig,
    encode_frame,
    message_frame,
)

from .hubtools import running, url

pytestmark = pytest.mark.anyio
FAST = {"backoff_base": 0.05, "backoff_cap": 0.2, "quic_verify": False}


@pytest.mark.parametrize("with_auth", [False, True])
async def test_frames_in_the_connect_read_are_delivered_after_accept(with_auth: bool) -> None:
    """CONNECT and a SEND in one transport read: the SEND is held until the verdict and
    must then be handled at once, not when the next input happens to arrive."""

    async def auth(request: ConnectRequest) -> Accept | Reject:
        await anyio.sleep(0.05)
        return Accept(user_id="u")

    hub = Hub(authenticator=auth if with_auth else None)
    seen = anyio.Event()

    @hub.router.on(CommandKind.SEND)
    async def on_send(conn: Connection, frame: Frame) -> None:
        seen.set()

    with anyio.fail_after(5):
        async with running(hub, ["ws"]) as bound:
            transport = await connect_websocket(url(bound, "ws"))
            core = ClientConnection(ClientConfig(format=Format.PROTOBUF))
            core.connect(0.0)
            send = message_frame(0, message_id="m-1", timestamp=1, payload=b"early")
            await transport.send([*core.data_to_send(), encode_frame(send, Format.PROTOBUF)])
            await seen.wait()  # within the bound, long before any heartbeat
            await transport.aclose(None, "")


async def test_ack_timeout_fires_on_time_while_the_loop_sleeps() -> None:
    """A SEND's ACK deadline is earlier than the next PING: the reading task must wake
    for it (the deadline is re-armed from the sending task)."""
    hub = Hub()

    @hub.router.on(CommandKind.SEND)
    async def never_returns(conn: Connection, frame: Frame) -> None:
        await anyio.sleep_forever()

    config = ClientConfig(ack_timeout=0.3, heartbeat_interval=30.0)
    with anyio.fail_after(5):
        async with running(hub, ["ws"]) as bound, Client([url(bound, "ws")], config, **FAST) as c:
            await c.wait_connected()
            with anyio.fail_after(2), pytest.raises(SendFailed, match="ack_timeout"):
                await c.send(b"lost")


async def test_send_fails_after_ack_timeout_while_disconnected() -> None:
    hub = Hub()

    @hub.router.on(CommandKind.SEND)
    async def stall(conn: Connection, frame: Frame) -> None:
        await anyio.sleep_forever()  # never ACKed
    with anyio.fail_after(10):
        async with running(hub, ["ws"]) as bound:
            client = Client([url(bound, "ws")], ClientConfig(ack_timeout=0.5), **FAST)
            async with client:
                await client.wait_connected()
                ident = await client.start_send(b"x")
                for conn in list(hub.connections.values()):
                    conn.close()  # server_shutdown: the client will try to reconnect
                with anyio.fail_after(2), pytest.raises(SendFailed, match="ack_timeout"):
                    await client.wait_ack(ident)


async def test_client_handler_exception_does_not_kill_the_client() -> None:
    hub = Hub()

    @hub.router.on_custom("echo")
    async def echo(conn: Connection, frame: Frame) -> None:
        conn.send_frame(frame)

    with anyio.fail_after(5):
        async with running(hub, ["ws"]) as bound:
            client = Client([url(bound, "ws")], **FAST)

            @client.router.on(CommandKind.CUSTOM)
            async def buggy(c: Client, frame: Frame) -> None:
                raise RuntimeError("app bug")

            async with client:
                await client.wait_connected()
                await client.send_custom("echo", b"1")
                await client.send(b"still alive")
                assert client.state is ConnectionState.CONNECTED


async def test_aclose_while_not_connected_returns_to_the_caller() -> None:
    after = False
    with anyio.fail_after(5):
        async with Client(["ws://127.0.0.1:9"], connect_timeout=0.2, **FAST) as client:
            await anyio.sleep(0.1)
            await client.aclose()
            after = True
    assert after


async def test_race_cancelled_after_a_win_closes_the_winner() -> None:
    """The fast attempt wins at once; the slow one needs 0.2 s to clean up after being
    cancelled, and the caller is cancelled meanwhile: the winner must not leak."""
    closed: list[str] = []

    class Fake:
        framing = Framing.MESSAGE
        remote = "fake"

        async def receive(self) -> bytes:
            await anyio.sleep_forever()
            raise AssertionError

        async def send(self, chunks: list[bytes]) -> None:
            pass

        async def aclose(self, number: int | None, reason: str) -> None:
            closed.append(reason)

    async def dial(u: str) -> Fake:
        if u == "slow":
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.2)
        return Fake()

    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                await anyio.sleep(0.05)
                scope.cancel()

            tg.start_soon(cancel_soon)
            await race(["slow", "fast"], dial, stagger=0)  # type: ignore[arg-type]
            await anyio.sleep_forever()
    assert closed == ["race cancelled"]


async def test_connect_timeout_names_the_url_and_stage(caplog: pytest.LogCaptureFixture) -> None:
    """A server that accepts TCP but never answers the upgrade: the failure the client
    reports (log, ``connect_error``, ``wait_connected``) is the transport's own ("<url>:
    not connected within 0.3 s"), not a bare TimeoutError from a second deadline racing
    it."""
    held: list[anyio.abc.SocketStream] = []

    async def hang(stream: anyio.abc.SocketStream) -> None:
        held.append(stream)
        await anyio.sleep_forever()

    caplog.set_level("WARNING", logger="flare.client")
    with anyio.fail_after(5):
        async with (
            await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(listener.serve, hang)
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            hanging = f"ws://127.0.0.1:{port}"
            async with Client([hanging], connect_timeout=0.3, reconnect=False, **FAST) as client:
                with pytest.raises(ClientClosed) as closed:
                    await client.wait_connected()
            tg.cancel_scope.cancel()
    expected = f"{hanging}: not connected within 0.3 s"
    assert held  # the TCP connect succeeded; the upgrade is what timed out
    assert expected in caplog.text
    assert expected in str(closed.value)
    assert isinstance(client.connect_error, RaceFailed)
    assert isinstance(client.connect_error.errors[hanging], TimeoutError)


async def test_final_drain_is_bounded_when_the_peer_stops_reading() -> None:
    """The core closes on a timer (auth_timeout) and its ERROR cannot be written (the peer
    reads nothing): ``run()`` gives the write ``drain_timeout`` and returns; it used to
    wait forever."""
    from flare_drivers._clock import now
    from flare_drivers._loop import ConnectionDriver
    from flare_drivers._transport import TransportClosed
    from flare_proto import ServerConnection

    closed: list[int | None] = []

    class Stuck:
        framing = Framing.MESSAGE
        remote = "stuck"

        async def receive(self) -> bytes | TransportClosed:
            await anyio.sleep_forever()
            raise AssertionError

        async def send(self, chunks: list[bytes]) -> None:
            await anyio.sleep_forever()  # the peer's receive window is full

        async def aclose(self, number: int | None, reason: str) -> None:
            closed.append(number)

    async def ignore(event: object) -> None:
        pass

    core = ServerConnection(ServerConfig(auth_timeout=0.1), now=now())
    driver = ConnectionDriver(core, Stuck(), ignore, drain_timeout=0.2)
    with anyio.fail_after(5):  # the bug: forever
        await driver.run()
    assert core.close_code is CloseCode.AUTH_TIMEOUT
    assert closed  # the transport was closed regardless


async def test_client_quic_idle_timeout_is_above_its_heartbeat_tolerance() -> None:
    """B25: QUIC must not drop a quiet connection before flare's own deadlines decide:
    the background liveness timeout is 360 s by default, the idle timeout 30 s above."""
    assert Client(["quic://127.0.0.1:9"])._quic_idle_timeout() == 390.0
    slow = ClientConfig(heartbeat_timeout=500.0)
    assert Client(["quic://127.0.0.1:9"], slow)._quic_idle_timeout() > 500.0 * 3


async def test_server_quic_idle_timeout_is_above_the_hub_idle_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The QUIC listener's idle timeout sits 30 s above the hub's ``idle_timeout`` (at
    least 120 s), so the hub closes an idle connection first, with a close code (B25)."""
    from flare_drivers import _quic, _serve

    seen: list[float] = []

    async def fake_serve_quic(handler: object, **kwargs: Any) -> None:
        seen.append(kwargs["idle_timeout"])
        kwargs["task_status"].started("127.0.0.1:1")

    monkeypatch.setattr(_quic, "serve_quic", fake_serve_quic)  # serve() imports it late
    for idle in (300.0, 10.0):
        hub = Hub(ServerConfig(idle_timeout=idle))
        async with anyio.create_task_group() as tg:
            await tg.start(_serve.serve, hub, [_serve.Listener(kind="quic", port=0)])
            tg.cancel_scope.cancel()
    assert seen == [330.0, 120.0]
