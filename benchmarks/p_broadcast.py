"""P6: broadcast of a 256-byte message to 1,000 WebSocket connections, flare against a bare
WebSocket broadcast on the same stack.

What one sample measures: a server process holds ``N`` (1,000) WebSocket connections from
a separate client process on 127.0.0.1. On SIGUSR1 the server broadcasts ``K`` messages of
256 bytes to all of them, one broadcast after the other with one event-loop checkpoint in
between (as if each broadcast were triggered by its own event); the client process stamps
the moment the last of its ``N`` receivers has received all ``K`` messages. The sample is
``K / (that moment - the first broadcast call)`` broadcasts per second (``time.monotonic``
is one clock for every process on Linux). Each side's processes are started once and
serve every repeat; repeats are interleaved (every side in turn, the order reversed on odd
repeats) after one unmeasured warm-up round each, and the ratio is the median of the
per-repeat flare/peer ratios (``speed_row``, goal >= 0.8).

* **flare**: :class:`~flare_drivers.Hub` served by :func:`~flare_drivers.serve` on one
  WebSocket listener; on the signal it calls ``hub.broadcast(frame)`` K times, ``frame``
  a SEND (new message id per broadcast, 256-byte payload) built before the clock starts.
  The receivers are 1,000 negotiated flare connections (CONNECT → CONNECT_ACK through
  flare's client core, Protobuf, no compression, over flare's WebSocket transport
  :func:`~flare_drivers.connect_websocket`); once negotiated they count WebSocket
  messages exactly as the peer's receivers do. P6 is the server's broadcast: receivers
  that decoded every frame with the client core made the client process the bottleneck
  (~17 µs per frame against ~12 µs for a bare count), so the row measured the client
  core rather than the broadcast (the client core's speed is P3's business).
* **peer** (the row's ratio): the same server-process shape without any protocol, on the
  same stack as flare: anyio (asyncio backend) TCP streams and wsproto for the opening
  handshake and frame encoding. On the signal it encodes the 256-byte message as one
  WebSocket Binary frame *once* per broadcast (server frames are unmasked, so the same
  bytes are valid on every connection) and awaits ``stream.send(frame)`` on each of the
  1,000 connections in turn: "encode once + one send per connection, no protocol". That
  is the fastest reasonable broadcast with anyio streams (a task per connection or a
  queue per connection only adds work; every anyio ``send`` is a checkpoint, which a
  sequential loop pays once per connection and nothing more). Its receivers are 1,000 bare
  WebSocket clients on flare's WebSocket transport (``connect_websocket``, no flare
  protocol) counting messages: the same receiving loop as flare's once negotiated, so
  that the only difference left is the server.
* **peer_wsproto_rx** (``extra``): the same peer server with bare *wsproto* receivers
  (anyio stream + ``WSConnection``), to show how much the receiving parser weighs.
* **websockets** (``extra``): the ``websockets`` library's asyncio server and its
  synchronous ``broadcast()``, which frames the message for each connection and writes it
  straight into the asyncio transport without yielding: a different stack (plain asyncio,
  no anyio streams), shown as a reference point. Same receivers as the peer.

On a 2-core machine the receiving process weighs as much as the server (either can be the
bottleneck): ``extra`` reports each side's server and client CPU seconds per round and the
time spent inside the broadcast calls themselves, so that can be read off.

    .venv/bin/python benchmarks/p_broadcast.py            # K = 20, 7 repeats
    .venv/bin/python benchmarks/p_broadcast.py --quick    # K = 10, 3 repeats

``--only flare,peer`` runs a subset of the sides (the ratio needs both).
``P6_PROFILE_SERVER=/tmp/p6`` (or ``P6_PROFILE_CLIENTS``) runs those children under
cProfile and writes ``/tmp/p6.<kind>`` when they are stopped (a server profiles its
broadcast rounds only, from the first broadcast call to the next round's signal).

Loopback only. Every child has a hard deadline and is stopped on exit from the parent
(``Child``); the soft RLIMIT_NOFILE is raised in each child.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from _common import Child, Row, cpu_seconds, emit, raise_nofile, speed_row

N = 1000
"""Receiving connections."""
SIZE = 256
"""Payload bytes per broadcast message."""
MAX_LIFE = 150.0
"""Hard bound on any child's life, seconds."""
CONNECT_CONCURRENCY = 64
"""Connections opened at once by a client process (keeps the listen backlog short)."""
SCRIPT = str(Path(__file__).resolve())
PROFILER: Any = None
"""The cProfile profiler of a child run with ``P6_PROFILE_*`` (servers: rounds only)."""
SIDES = {
    "flare": ("flare", "flare"),
    "peer": ("peer", "ws"),
    "peer_wsproto_rx": ("peer", "wsproto"),
    "websockets": ("websockets", "ws"),
}
"""What is measured: name -> (server, receivers) (module docstring)."""
KINDS = tuple(SIDES)


# -- servers -------------------------------------------------------------------------------


async def _broadcast_rounds(k: int, broadcast_once: Any, prepare: Any) -> None:
    """On each SIGUSR1: ``k`` broadcasts, each followed by one checkpoint; report the
    clock at the first call (the client process reports the end). ``prepare()`` runs
    before the clock starts and returns how many receivers there are."""
    with anyio.open_signal_receiver(signal.SIGUSR1) as signals:
        emit({"ready": True})
        async for _ in signals:
            if PROFILER is not None:
                PROFILER.disable()  # between rounds (connection setup is not profiled)
            receivers = prepare()
            if PROFILER is not None:
                PROFILER.enable()
            inside = 0.0
            start = time.monotonic()
            for i in range(k):
                t = time.monotonic()
                await broadcast_once(i)
                inside += time.monotonic() - t
                await anyio.lowlevel.checkpoint()
            emit({"t0": start, "inside": inside, "receivers": receivers})


async def flare_server(k: int) -> None:
    """A Hub on one WebSocket listener; SIGUSR1 runs one round of ``k`` broadcasts."""
    from flare_drivers import Hub, Listener, serve
    from flare_drivers._clock import now, process_ids
    from flare_proto import message_frame
    from flare_proto._frames import SEND

    hub = Hub(max_connections=N + 100)
    payload = os.urandom(SIZE)
    ids = process_ids()
    frames: list[Any] = []

    async def broadcast_once(i: int) -> None:
        hub.broadcast(frames[i])

    def prepare() -> int:
        # A new SEND per broadcast (its own id), built before the clock starts.
        t = now()
        frames[:] = [
            message_frame(
                SEND,
                message_id=ids.message_id(t),
                timestamp=ids.timestamp_ms(t),
                payload=payload,
            )
            for _ in range(k)
        ]
        return sum(1 for _ in hub.accepted())

    async with anyio.create_task_group() as tg:
        bound = await tg.start(serve, hub, [Listener(kind="ws", host="127.0.0.1", port=0)])
        emit({"url": f"ws://{bound['ws']}"})
        await _broadcast_rounds(k, broadcast_once, prepare)


async def peer_server(k: int) -> None:
    """Bare WebSocket over anyio + wsproto: encode once, one ``send`` per connection."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request
    from wsproto.frame_protocol import FrameProtocol

    streams: list[anyio.abc.SocketStream] = []
    payload = os.urandom(SIZE)
    encoder = FrameProtocol(client=False, extensions=[])

    async def handle(stream: anyio.abc.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        async with stream:
            while True:  # opening handshake
                ws.receive_data(await stream.receive())
                if any(isinstance(e, Request) for e in ws.events()):
                    break
            await stream.send(ws.send(AcceptConnection()))
            streams.append(stream)
            try:
                while True:  # only to notice the end of the connection
                    try:
                        data = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    ws.receive_data(data)
                    if any(isinstance(e, CloseConnection) for e in ws.events()):
                        return
            finally:
                streams.remove(stream)

    async def broadcast_once(i: int) -> None:
        frame = bytes(encoder.send_data(payload, fin=True))  # encoded once per broadcast
        for stream in streams:
            try:  # noqa: SIM105 (cheaper than contextlib.suppress in the hot loop)
                await stream.send(frame)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        emit({"url": f"ws://127.0.0.1:{port}"})
        await _broadcast_rounds(k, broadcast_once, lambda: len(streams))


async def websockets_server(k: int) -> None:
    """The ``websockets`` library's asyncio server and synchronous ``broadcast()``."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    conns: set[ServerConnection] = set()
    payload = os.urandom(SIZE)

    async def handle(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def broadcast_once(i: int) -> None:
        broadcast(conns, payload)

    async with serve(handle, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        emit({"url": f"ws://127.0.0.1:{port}"})
        await _broadcast_rounds(k, broadcast_once, lambda: len(conns))


# -- receivers -----------------------------------------------------------------------------


class Counter:
    """Counts messages per receiver; reports the clock when all got ``k`` more."""

    def __init__(self, n: int, k: int) -> None:
        self.n = n
        self.k = k
        self.counts = [0] * n
        self.target = k
        self.done = 0
        self.ready = 0
        self.all_ready = anyio.Event()

    def connected(self) -> None:
        self.ready += 1
        if self.ready == self.n:
            self.all_ready.set()

    def got(self, i: int) -> None:
        counts = self.counts
        counts[i] += 1
        if counts[i] == self.target:
            self.done += 1
            if self.done == self.n:
                emit({"t1": time.monotonic(), "frames": sum(counts)})
                self.done = 0
                self.target += self.k


async def flare_receivers(url: str, n: int, k: int) -> None:
    """``n`` negotiated flare connections over flare's WebSocket transport: CONNECT →
    CONNECT_ACK through flare's client core, then the same counting loop as
    :func:`ws_receivers`. P6 measures the server's broadcast; receivers that decoded every
    frame would make the client process the bottleneck and measure the client core
    instead (that is P3's business), so both sides count WebSocket messages alike."""
    from flare_drivers import connect_websocket
    from flare_drivers._clock import now
    from flare_drivers._transport import TransportClosed
    from flare_proto import ClientConfig, ClientConnection, Format, HandshakeCompleted

    config = ClientConfig(format=Format.PROTOBUF, heartbeat_interval=3600, heartbeat_timeout=7200)
    counter = Counter(n, k)
    gate = anyio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            transport = await connect_websocket(url)
            core = ClientConnection(config)
            core.connect(now())
            await transport.send(core.data_to_send())
            while not core.closed:
                item = await transport.receive()
                if isinstance(item, TransportClosed):
                    return
                core.receive_message(item, now())
                if any(type(e) is HandshakeCompleted for e in core.events_received()):
                    break
        counter.connected()
        got = counter.got
        while True:
            item = await transport.receive()
            if isinstance(item, TransportClosed):
                break
            got(i)
        await transport.aclose(None, "")

    await _run_receivers(n, one, counter)


async def ws_receivers(url: str, n: int, k: int) -> None:
    """``n`` bare WebSocket clients on flare's WebSocket transport (no flare protocol),
    counting messages: the same loop as :func:`flare_receivers` once negotiated."""
    from flare_drivers import connect_websocket
    from flare_drivers._transport import TransportClosed

    counter = Counter(n, k)
    gate = anyio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            transport = await connect_websocket(url)
        counter.connected()
        got = counter.got
        while True:
            item = await transport.receive()
            if isinstance(item, TransportClosed):
                break
            got(i)
        await transport.aclose(None, "")

    await _run_receivers(n, one, counter)


async def wsproto_receivers(url: str, n: int, k: int) -> None:
    """``n`` bare wsproto clients over anyio, counting Binary messages."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

    host, port = url.removeprefix("ws://").rsplit(":", 1)
    counter = Counter(n, k)
    gate = anyio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> None:
        ws = WSConnection(ConnectionType.CLIENT)
        async with gate:
            stream = await anyio.connect_tcp(host, int(port))
            await stream.send(ws.send(Request(host=f"{host}:{port}", target="/")))
            accepted = False
            while not accepted:
                ws.receive_data(await stream.receive())
                accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
        counter.connected()
        got = counter.got
        async with stream:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if type(event) is BytesMessage:
                        if event.message_finished:
                            got(i)
                    elif isinstance(event, CloseConnection):
                        return

    await _run_receivers(n, one, counter)


async def _run_receivers(n: int, one: Any, counter: Counter) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
        with anyio.fail_after(60):
            await counter.all_ready.wait()
        emit({"ready": n})


# -- the parent ----------------------------------------------------------------------------


def _child_main(argv: list[str]) -> None:
    role, kind = argv[0], argv[1]
    raise_nofile()
    # A hard deadline: a child never outlives a crashed parent for long.
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(int(MAX_LIFE))
    profile = os.environ.get("P6_PROFILE_" + role.upper())
    if profile:
        # Profiling aid: cProfile this child, dump the stats when the parent stops it.
        import cProfile

        global PROFILER
        profiler = PROFILER = cProfile.Profile()

        def dump(*_: object) -> None:
            profiler.disable()
            profiler.dump_stats(f"{profile}.{kind}")
            os._exit(0)

        signal.signal(signal.SIGTERM, dump)
        if role == "clients":
            profiler.enable()
    if role == "server":
        k = int(argv[2])
        server = {"flare": flare_server, "peer": peer_server, "websockets": websockets_server}
        anyio.run(server[kind], k)
    else:
        url, n, k = argv[2], int(argv[3]), int(argv[4])
        receivers = {"flare": flare_receivers, "ws": ws_receivers, "wsproto": wsproto_receivers}
        anyio.run(receivers[kind], url, n, k)


class Side:
    """One side's server and receiver processes, started once for every round."""

    def __init__(self, kind: str, n: int, k: int) -> None:
        self.kind = kind
        self.n = n
        self.k = k
        server, self.receiver = SIDES[kind]
        self.server = Child([SCRIPT, "server", server, str(k)])
        self.clients: Child | None = None
        self.cpu: list[tuple[float, float]] = []
        self.inside: list[float] = []
        """Seconds spent inside the broadcast calls themselves, per round."""

    def start(self) -> None:
        self.server.__enter__()
        url = self.server.line(30)["url"]
        self.server.line(30)  # ready: the signal handler is installed
        self.clients = Child([SCRIPT, "clients", self.receiver, url, str(self.n), str(self.k)])
        self.clients.__enter__()
        self.clients.line(90)

    def stop(self) -> None:
        if self.clients is not None:
            self.clients.stop()
        self.server.stop()

    def round(self) -> float:
        """One round of ``k`` broadcasts; broadcasts per second."""
        assert self.clients is not None
        cpu0 = cpu_seconds(self.server.pid), cpu_seconds(self.clients.pid)
        assert self.server.proc is not None
        self.server.proc.send_signal(signal.SIGUSR1)
        start = self.server.line(30)
        if start["receivers"] != self.n:
            raise RuntimeError(f"{self.kind}: {start['receivers']} receivers, not {self.n}")
        end = self.clients.line(30)
        self.cpu.append(
            (cpu_seconds(self.server.pid) - cpu0[0], cpu_seconds(self.clients.pid) - cpu0[1])
        )
        self.inside.append(start["inside"])
        return self.k / float(end["t1"] - start["t0"])


def measure(quick: bool, *, kinds: tuple[str, ...] = KINDS) -> list[Row]:
    """P6: broadcasts per second of 256 B to 1,000 WebSocket connections."""
    k, repeats = (10, 3) if quick else (20, 7)
    sides = {kind: Side(kind, N, k) for kind in kinds}
    rates: dict[str, list[float]] = {kind: [] for kind in sides}
    try:
        for side in sides.values():
            side.start()
            side.round()  # warm-up, not counted
            side.cpu.clear()
            side.inside.clear()
        for r in range(repeats):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for kind in order:
                rates[kind].append(sides[kind].round())
    finally:
        for side in sides.values():
            side.stop()
    extra: dict[str, Any] = {"connections": N, "broadcasts_per_round": k, "payload": SIZE}
    for kind in ("peer_wsproto_rx", "websockets"):
        if kind in rates:
            extra[f"{kind}_broadcasts_per_s"] = round(statistics.median(rates[kind]), 2)
    for kind, side in sides.items():
        extra[f"{kind}_server_cpu_s_per_round"] = round(
            statistics.median(c[0] for c in side.cpu), 4
        )
        extra[f"{kind}_client_cpu_s_per_round"] = round(
            statistics.median(c[1] for c in side.cpu), 4
        )
        extra[f"{kind}_in_broadcast_calls_s_per_round"] = round(statistics.median(side.inside), 4)
    row = speed_row(
        "P6",
        f"broadcast {SIZE} B to {N} WS connections",
        "anyio + wsproto: encode once, one send per connection",
        # Either side alone (``--only``) is compared with itself.
        rates.get("flare") or rates["peer"],
        rates.get("peer") or rates["flare"],
        "broadcasts/s",
        0.8,
        rate=True,
        note=f"K={k} broadcasts per round; frames/s = broadcasts/s x {N}",
    )
    row.extra.update(extra)
    return [row]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("server", "clients"):
        _child_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS)
    )
    args = parser.parse_args()
    started = time.monotonic()
    (row,) = measure(args.quick, kinds=tuple(args.only.split(",")))
    print(
        f"P6 {row.measure}: flare {row.flare:.1f} /s, peer {row.peer:.1f} /s, "
        f"ratio {row.ratio:.3f} (goal >= {row.goal}, {'met' if row.met else 'NOT met'}), "
        f"{time.monotonic() - started:.1f} s"
    )
    for key, value in row.extra.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
