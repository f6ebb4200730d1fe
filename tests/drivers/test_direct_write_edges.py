"""Edge cases of the plain-TCP WebSocket path (``flare_drivers._tcp``, direct writes with
``send_nowait`` and the backlog finished by the writer).

Bugs a review found (fixed; these tests failed on 84e470d, which introduced the path):

* ``TcpStream.receive`` is not cancel-safe: every ``_FAIR``-th read that finds data yields
  *after* taking the bytes from the socket, and a cancellation delivered there (the
  driver's read deadline, ``wake()``) throws them away. WebSocketTransport.receive, which
  promises cancel safety, then parses mid-frame bytes: the connection dies with a
  protocol error (a Client receiving large messages with its heartbeat running);
* ``connect_tcp`` tries addresses one after another with no per-address time limit (anyio's
  ``connect_tcp`` races them, RFC 8305): one unresponsive address (IPv6 routed nowhere)
  eats the whole ``connect_timeout`` and the next, working address is never tried;
* ``connect_tcp`` creates each socket outside its ``try``: an address family the host
  cannot create (IPv6 disabled, ``::1`` still in /etc/hosts) ends the whole attempt
  instead of moving on to the next address;
* ``TcpStream.extra`` lacks ``local_port`` / ``remote_port``, which every anyio socket
  stream provides (the stream replaced one);
* a failure setting up an accepted socket (``TCP_NODELAY`` on a socket already reset, as
  macOS reports it) ended the whole WebSocket server.

The rest guard behaviour that is correct and easy to break: the backlog goes out before
the Close frame, ``aclose`` is bounded when the peer never reads, closing wakes a task
waiting to write, a cancelled connect leaks no socket, the server stops cleanly and
survives ``accept`` errors, hostname and IPv6 URLs, and ``receive`` fairness.
"""

from __future__ import annotations

import errno
import gc
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute

import flare_drivers._tcp as tcp
from flare_drivers import Client, Hub, StateChanged, connect_websocket
from flare_drivers._tcp import TcpStream, accept_ready, connect_tcp
from flare_drivers._transport import TransportClosed
from flare_drivers._websocket import WebSocketTransport, _accept_loop, serve_websocket
from flare_proto import ClientConfig, Format, FrameReceived, ServerConfig

from .hubtools import running, stream_pair, url

pytestmark = pytest.mark.anyio



@contextmanager
def no_resource_warnings() -> Iterator[None]:
    """Fail if anything in the block leaves a socket for the garbage collector."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked


def _unresponsive(family: socket.AddressFamily, host: str, port: int) -> list[socket.socket]:
    """A listener on ``host:port`` whose accept queue is full: a SYN gets no answer, so a
    connect to it hangs (as to an address routed nowhere). Close the sockets returned."""
    dead = socket.socket(family)
    dead.bind((host, port))
    dead.listen(0)
    filler = socket.socket(family)
    filler.setblocking(False)
    filler.connect_ex((host, port))
    return [dead, filler]


# -- bugs ---------------------------------------------------------------------------------


async def test_tcp_stream_receive_is_cancel_safe() -> None:
    """A receive cancelled before it returns must leave the bytes in the stream (anyio's
    socket streams, and trio's, check for cancellation before taking data)."""
    client, server = await stream_pair()
    try:
        await client.send(bytes(range(40)))
        await anyio.sleep(0.05)
        got = bytearray()
        with anyio.fail_after(5):
            for _ in range(15):
                got += await server.receive(1)
            for _ in range(10):  # cancelled calls, as the driver's read deadline does
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    got += await server.receive(1)
            while len(got) < 30:
                got += await server.receive(1)
        assert bytes(got) == bytes(range(30)), "bytes read by a cancelled receive were lost"
    finally:
        await client.aclose()
        await server.aclose()


async def test_websocket_receive_cancelled_while_data_flows_loses_nothing() -> None:
    """WebSocketTransport.receive is documented cancel-safe: a reader whose every call is
    cancelled at its first wait (the driver's deadline passing mid-flood) must still get
    every message whole, not a protocol error from bytes lost under it."""
    messages = [bytes([i]) * 100_000 for i in range(30)]
    got: list[bytes | TransportClosed] = []
    done = anyio.Event()

    async def handler(transport: WebSocketTransport) -> None:
        try:
            await anyio.sleep(0.2)  # everything is in the kernel buffers: reads never wait
            for _ in range(5000):
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    item = await transport.receive()
                    got.append(item)
                    if isinstance(item, TransportClosed) or len(got) == len(messages):
                        return
        finally:
            done.set()

    async with anyio.create_task_group() as tg:
        address = await tg.start(serve_websocket, handler)
        with anyio.fail_after(5):
            client = await connect_websocket(f"ws://{address}")
            await client.send(messages)
            await done.wait()
            await client.aclose(None, "")
        tg.cancel_scope.cancel()
    closed = [item for item in got if isinstance(item, TransportClosed)]
    assert not closed, f"the stream was corrupted: {closed}"
    assert got == messages


async def test_client_heartbeat_during_large_messages_keeps_the_stream_intact() -> None:
    """The symptom in a real client: heartbeat timers firing while large messages stream
    in cancel the read at a fairness yield; the lost bytes kill the connection ("Invalid
    opcode"). Seen on trio every run; asyncio delivers the deadline at another yield."""
    hub = Hub(ServerConfig(default_format=Format.PROTOBUF))
    payloads = [bytes([i]) * 200_000 for i in range(100)]
    got: list[bytes] = []
    states: list[StateChanged] = []
    async with running(hub, ("ws",)) as bound:
        config = ClientConfig(format=Format.PROTOBUF, heartbeat_interval=0.001)
        async with Client([url(bound, "ws")], config, reconnect=False) as client:
            with anyio.fail_after(10):
                await client.wait_connected()
                (conn,) = list(hub.accepted())
                for payload in payloads:
                    conn.send_message(payload)
                async for event in client:
                    if isinstance(event, FrameReceived):
                        got.append(event.frame.command.message.payload)
                        if len(got) == len(payloads):
                            break
                    elif isinstance(event, StateChanged):
                        states.append(event)
    count = len(got)
    assert count == len(payloads), f"connection lost after {count} messages: {states[-1]}"
    assert got == payloads


async def test_connect_tries_the_next_address_when_the_first_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name with an IPv6 address that does not answer and an IPv4 one that works (the
    classic broken-IPv6 host): anyio's connect_tcp starts the next address after 250 ms;
    ours waits on the first until ``connect_timeout`` and fails."""

    async def handler(transport: WebSocketTransport) -> None:
        await transport.receive()

    async with anyio.create_task_group() as tg:
        address = await tg.start(serve_websocket, handler)
        port = int(address.rpartition(":")[2])
        held = _unresponsive(socket.AF_INET6, "::1", port)
        try:

            async def resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
                return [
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                ]

            monkeypatch.setattr(anyio, "getaddrinfo", resolve)
            with anyio.fail_after(5):
                client = await connect_websocket(f"ws://dual.test:{port}", connect_timeout=1.0)
                await client.aclose(None, "")
        finally:
            for sock in held:
                sock.close()
        tg.cancel_scope.cancel()


async def test_connect_skips_an_address_family_the_host_cannot_create(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IPv6 disabled in the kernel but ``::1 localhost`` in /etc/hosts: socket(AF_INET6)
    fails with EAFNOSUPPORT; the next address (127.0.0.1) must still be tried."""

    class NoIPv6:
        def __getattr__(self, name: str) -> Any:
            return getattr(socket, name)

        @staticmethod
        def socket(family: int = socket.AF_INET, *args: Any) -> socket.socket:
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            return socket.socket(family, *args)

    async def resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    try:
        monkeypatch.setattr(tcp, "socket", NoIPv6())
        monkeypatch.setattr(anyio, "getaddrinfo", resolve)
        with anyio.fail_after(5):
            stream = await connect_tcp("localhost", listening.getsockname()[1])
            (accepted,) = await accept_ready(listening)
        accepted.close()
        await stream.aclose()
    finally:
        listening.close()


async def test_tcp_stream_reports_ports_like_anyio_socket_streams() -> None:
    """Code written against anyio's socket streams asks for ``remote_port`` and
    ``local_port`` (anyio's SocketStream provides both for TCP)."""
    client, server = await stream_pair()
    try:
        port = server.extra(SocketAttribute.local_address)[1]
        assert client.extra(SocketAttribute.remote_port) == port
        assert server.extra(SocketAttribute.local_port) == port
        assert client.extra(SocketAttribute.local_port) == server.extra(SocketAttribute.remote_port)
    finally:
        await client.aclose()
        await server.aclose()


# -- guards -------------------------------------------------------------------------------


async def test_backlog_goes_out_before_the_close_frame() -> None:
    """aclose with a send_nowait backlog: the peer gets the whole message, then Close."""
    got: list[bytes | TransportClosed] = []
    done = anyio.Event()
    reading = anyio.Event()

    async def handler(transport: WebSocketTransport) -> None:
        await reading.wait()
        while True:
            item = await transport.receive()
            got.append(item)
            if isinstance(item, TransportClosed):
                break
        done.set()

    big = bytes(range(256)) * 32768  # 8 MiB: more than the socket buffers hold
    async with anyio.create_task_group() as tg:
        address = await tg.start(serve_websocket, handler)
        with anyio.fail_after(10):
            client = await connect_websocket(f"ws://{address}", max_message=64 << 20)
            assert client.send_nowait([b"first"]) and client.send_nowait([big])
            assert client.backlog > 0
            reading.set()
            await client.aclose(1000, "bye")
            await done.wait()
        tg.cancel_scope.cancel()
    assert got[:2] == [b"first", big]
    assert isinstance(got[2], TransportClosed) and got[2].number == 1000


async def test_aclose_with_a_backlog_is_bounded_when_the_peer_never_reads() -> None:
    async def handler(transport: WebSocketTransport) -> None:
        await anyio.sleep_forever()

    big = bytes(32 << 20)
    async with anyio.create_task_group() as tg:
        address = await tg.start(serve_websocket, handler)
        client = await connect_websocket(f"ws://{address}", max_message=64 << 20)
        client._close_timeout = 0.2
        assert client.send_nowait([big]) and client.backlog > 0
        with anyio.fail_after(2):
            start = anyio.current_time()
            await client.aclose(None, "")
        assert anyio.current_time() - start < 1.0
        assert client.send_nowait([b"x"]) is False
        tg.cancel_scope.cancel()


async def test_close_wakes_a_task_waiting_to_write() -> None:
    client, server = await stream_pair()
    client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def write() -> None:
                with pytest.raises(anyio.ClosedResourceError):
                    await client.send(bytes(16 << 20))  # nobody reads: it waits

            tg.start_soon(write)
            await anyio.sleep(0.1)
            await client.aclose()
    await server.aclose()


async def test_cancelled_connect_closes_its_socket() -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    listening.close()
    held = _unresponsive(socket.AF_INET, "127.0.0.1", port)
    try:
        with no_resource_warnings():
            with anyio.move_on_after(0.1) as scope:
                await connect_tcp("127.0.0.1", port)
            assert scope.cancelled_caught
    finally:
        for sock in held:
            sock.close()


async def test_server_stops_cleanly_with_open_connections() -> None:
    async def handler(transport: WebSocketTransport) -> None:
        await transport.receive()

    ended: list[bytes | TransportClosed] = []

    async def read(client: WebSocketTransport) -> None:
        ended.append(await client.receive())  # answers the server's Close at once
        await client.aclose(None, "")

    with no_resource_warnings(), anyio.fail_after(5):
        async with anyio.create_task_group() as clients, anyio.create_task_group() as tg:
            address = await tg.start(serve_websocket, handler)
            for _ in range(3):
                clients.start_soon(read, await connect_websocket(f"ws://{address}"))
            port = int(address.rpartition(":")[2])
            raw = socket.create_connection(("127.0.0.1", port))  # no upgrade yet
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        raw.close()
    assert len(ended) == 3 and all(isinstance(item, TransportClosed) for item in ended)


async def test_accept_errors_back_off_and_the_server_keeps_accepting() -> None:
    """EMFILE from accept() must neither end the accept loop nor spin."""

    class Failing:
        def __init__(self, sock: socket.socket, failures: int) -> None:
            self.sock, self.failures, self.calls = sock, failures, 0

        def setblocking(self, flag: bool) -> None:
            self.sock.setblocking(flag)

        def fileno(self) -> int:
            return self.sock.fileno()

        def accept(self) -> tuple[socket.socket, Any]:
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self.sock.accept()

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    failing = Failing(listening, failures=3)
    served: list[socket.socket] = []
    got = anyio.Event()

    async def serve(sock: socket.socket) -> None:
        served.append(sock)
        got.set()

    peer = socket.create_connection(listening.getsockname())
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_accept_loop, failing, tg, serve)  # type: ignore[arg-type]
                await got.wait()
                tg.cancel_scope.cancel()
        assert len(served) == 1 and failing.calls <= 10  # backed off, did not spin
    finally:
        for sock in (*served, peer, listening):
            sock.close()


@pytest.mark.parametrize("host", ["localhost", "ipv6"])
async def test_hostname_and_ipv6_urls(host: str) -> None:
    async def handler(transport: WebSocketTransport) -> None:
        await transport.send([transport.remote.encode()])
        await transport.receive()

    listen = "::1" if host == "ipv6" else "127.0.0.1"
    async with anyio.create_task_group() as tg:
        address = await tg.start(partial_serve, handler, listen)
        port = address.rpartition(":")[2]
        target = f"ws://[::1]:{port}" if host == "ipv6" else f"ws://localhost:{port}"
        with anyio.fail_after(5):
            client = await connect_websocket(target)
            remote = await client.receive()
            assert isinstance(remote, bytes)
            if host == "ipv6":
                assert remote.startswith(b"[::1]:") and client.remote == f"[::1]:{port}"
            await client.aclose(None, "")
        tg.cancel_scope.cancel()


async def partial_serve(
    handler: Any, host: str, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    await serve_websocket(handler, host=host, task_status=task_status)


async def test_receive_lets_other_tasks_run_while_data_never_runs_out() -> None:
    client, server = await stream_pair()
    ticks = 0
    try:
        await client.send(bytes(256 * 1024))
        await anyio.sleep(0.05)
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await anyio.lowlevel.checkpoint()

            tg.start_soon(tick)
            await anyio.sleep(0)
            start = ticks
            with anyio.fail_after(5):
                total = 0
                while total < 256 * 1024:
                    total += len(await server.receive(1024))
            tg.cancel_scope.cancel()
        assert ticks - start >= 256 // 16 - 1
    finally:
        await client.aclose()
        await server.aclose()


async def test_a_socket_failing_setup_does_not_stop_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "A failing connection never stops the server" (serve_websocket): setting up an
    accepted socket can fail (macOS: setsockopt(TCP_NODELAY) on a connection the peer
    already reset raises EINVAL); the next connection must still be served."""
    import flare_drivers._websocket as websocket

    failures = [OSError(errno.EINVAL, "Invalid argument")]

    class Fragile(TcpStream):
        def __init__(self, sock: socket.socket) -> None:
            if failures:
                raise failures.pop()
            super().__init__(sock)

    async def handler(transport: WebSocketTransport) -> None:
        await transport.send([b"served"])
        await transport.receive()

    monkeypatch.setattr(websocket, "TcpStream", Fragile)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            address = await tg.start(serve_websocket, handler)
            host, _, port = address.rpartition(":")
            first = socket.create_connection((host, int(port)))
            await anyio.sleep(0.05)  # the server fails to set it up
            client = await connect_websocket(f"ws://{address}")
            assert await client.receive() == b"served"
            await client.aclose(None, "")
            first.close()
            tg.cancel_scope.cancel()
