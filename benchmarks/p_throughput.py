"""P3/P4: pipelined SEND → ACK throughput, flare against a bare echo over the same transport.

What one sample measures: a client process keeps up to ``WINDOW`` (128) messages of 256
bytes in flight to a server process on 127.0.0.1 and counts the replies per second during
a fixed interval, after a warm-up. Both sides are real processes, started once per run
(servers) or once per sample (clients).

* **P3 flare (WebSocket)**: the server is a :class:`~flare_drivers.Hub` on a WebSocket
  listener whose SEND handler does nothing, so each SEND is ACKed by the hub after the
  handler returned (DESIGN §6). The client is flare's core + driver loop
  (:class:`~flare_proto.ClientConnection` under :class:`~flare_drivers._loop.ConnectionDriver`
  over :func:`~flare_drivers.connect_websocket`), i.e. what :class:`~flare_drivers.Client`
  runs, without the per-SEND waiter objects of its ``send``/``wait_ack`` API (the peer
  client has no such layer either). Full protocol: CONNECT/CONNECT_ACK, Protobuf frames,
  SEND tracked by the core until its ACK frame, PING every 0.5 s answered by PONG (the
  PONGs seen are reported), ACK order checked against send order. The rate counts ACKs.
* **P3 flare, identified sender** (in ``extra``, not the ratio): the same client with a
  user id, so the hub also remembers each SEND it handled to ACK a resend instead of
  handling it twice (docs/decisions.md, "Delivery"); anonymous senders skip that work.
* **P3 peer**: a bare ``websockets`` echo server (its own process, compression off) and a
  ``websockets`` client sending 256-byte Binary messages, counting echoes.
* **P4 flare (QUIC)**: as P3 over flare's QUIC transport (aioquic under flare's pump, one
  bidirectional stream, 4-byte length prefixes written by the core).
* **P4 peer**: a bare aioquic echo server (``aioquic.asyncio.serve``) and client over one
  bidirectional stream with 4-byte big-endian length framing; the server echoes every
  complete frame, no flare protocol.

Every client uses the same window policy (:class:`Window`): when slots are free, the
sender takes them all and sends that many messages; each reply frees one slot.
Repeats are interleaved (flare then peer, peer then flare on odd repeats) and each row's
ratio is the median of the per-repeat flare/peer ratios (``speed_row``). A row's ``extra``
also lists each repeat's rates and the CPU time per message of the client (its own
``process_time``) and of the server (``/proc``, whole sample): on a shared machine those
move much less than the rates.

    .venv/bin/python benchmarks/p_throughput.py            # 5 repeats of 2 s per sample
    .venv/bin/python benchmarks/p_throughput.py --quick    # 3 repeats of 0.7 s
    .venv/bin/python benchmarks/p_throughput.py --only P3 --repeats 9
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from _common import Child, Row, children, cpu_seconds, emit, paired_ratio, speed_row

WINDOW = 128
"""Messages in flight at most, for every client (flare and peers)."""
SIZE = 256
"""Payload bytes per message."""
HEARTBEAT = 0.5
"""flare client PING interval during the benchmark (heartbeats stay on and are counted)."""
MAX_LIFE = 300.0
"""Hard bound on any child's life, seconds."""


class Window:
    """At most ``size`` messages in flight: :meth:`take` waits for free slots and takes
    all of them; :meth:`give` frees slots (one per reply)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._event = anyio.Event()

    async def take(self) -> int:
        while self.free == 0:
            self._event = anyio.Event()
            await self._event.wait()
        n, self.free = self.free, 0
        return n

    def give(self, n: int = 1) -> None:
        self.free += n
        self._event.set()


class Stats:
    """Replies counted by a client."""

    def __init__(self) -> None:
        self.replies = 0
        self.sent = 0


SendN = Callable[[int], Awaitable[None]]


async def drive(
    send_n: SendN, stats: Stats, window: Window, warmup: float, seconds: float
) -> dict[str, Any]:
    """Keep the window full for ``warmup`` + ``seconds``; the rate is the replies counted
    during the last ``seconds``. Then stop sending and wait for the in-flight replies."""
    stop = False

    async def sender() -> None:
        while not stop:
            n = await window.take()
            stats.sent += n
            await send_n(n)

    cpu0 = time.process_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await anyio.sleep(warmup)
        r0, t0, c0 = stats.replies, time.perf_counter(), time.process_time()
        await anyio.sleep(seconds)
        r1, t1, c1 = stats.replies, time.perf_counter(), time.process_time()
        stop = True
        tg.cancel_scope.cancel()
    # Every message sent gets its reply (nothing is lost or left unanswered).
    with anyio.move_on_after(10):
        while window.free < window.size:
            await anyio.sleep(0.005)
    return {
        "rate": (r1 - r0) / (t1 - t0),
        "replies": r1 - r0,
        "seconds": t1 - t0,
        "client_cpu_per_msg_us": (c1 - c0) / max(1, r1 - r0) * 1e6,
        "sent_total": stats.sent,
        "replies_total": stats.replies,
        "in_flight_left": window.size - window.free,
        "client_cpu_total_s": time.process_time() - cpu0,
    }


# -- flare -------------------------------------------------------------------------------------


async def flare_server(args: argparse.Namespace) -> None:
    from flare_drivers import Hub, Listener, serve
    from flare_proto import CommandKind, Frame

    hub = Hub()

    @hub.router.on(CommandKind.SEND)
    async def nothing(conn: object, frame: Frame) -> None:
        """Does nothing: the hub ACKs the SEND once this returns."""

    listeners = [Listener(kind="ws", port=0), Listener(kind="quic", port=0)]
    async with anyio.create_task_group() as tg:
        bound = await tg.start(serve, hub, listeners)
        emit(bound)
        await _until_terminated()
        tg.cancel_scope.cancel()


async def flare_client(args: argparse.Namespace) -> dict[str, Any]:
    from flare_drivers import connect_quic, connect_websocket
    from flare_drivers._clock import now, process_ids
    from flare_drivers._loop import ConnectionDriver
    from flare_drivers._transport import Transport
    from flare_proto import (
        ClientConfig,
        ClientConnection,
        Compression,
        ConnectionClosed,
        Event,
        Format,
        HandshakeCompleted,
        MessageAcked,
        PongReceived,
    )

    transport: Transport
    if args.url.startswith("quic://"):
        transport = await connect_quic(args.url, verify=False)
    else:
        transport = await connect_websocket(args.url)
    config = ClientConfig(
        format=Format.PROTOBUF,
        compression=Compression.NONE,
        # With a user id the hub remembers every SEND it handled, to ACK a resend instead of
        # handling it twice (docs/decisions.md, "Delivery"); anonymous senders skip that.
        user_id=args.user,
        heartbeat_interval=HEARTBEAT,
        heartbeat_timeout=30.0,
        ack_timeout=30.0,
    )
    core = ClientConnection(config, ids=process_ids(), framing=transport.framing)
    stats, window = Stats(), Window(args.window)
    ready = anyio.Event()
    sent_ids: collections.deque[str] = collections.deque()
    checks = {"out_of_order": 0, "pongs": 0, "closed": ""}
    payload = os.urandom(args.size)

    async def on_event(event: Event) -> None:
        if type(event) is MessageAcked:
            if sent_ids.popleft() != event.message_id:
                checks["out_of_order"] += 1
            stats.replies += 1
            window.give()
        elif isinstance(event, HandshakeCompleted):
            ready.set()
        elif isinstance(event, PongReceived):
            checks["pongs"] += 1
        elif isinstance(event, ConnectionClosed):
            checks["closed"] = f"{event.code} {event.reason}"
            ready.set()

    driver = ConnectionDriver(core, transport, on_event)
    send_message, append = core.send_message, sent_ids.append

    async def send_n(n: int) -> None:
        for _ in range(n):
            append(send_message(payload, now()))
        driver.flush()

    async with anyio.create_task_group() as tg:
        core.connect(now())
        driver.flush()
        tg.start_soon(driver.run)
        await ready.wait()
        result = await drive(send_n, stats, window, args.warmup, args.seconds)
        result.update(checks)
        result["format"] = core.format.name
        if not core.closed:
            core.close(now())
            driver.flush()
    return result


# -- peers -------------------------------------------------------------------------------------


async def ws_peer_server(args: argparse.Namespace) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        emit({"ws": f"{host}:{port}"})
        await _until_terminated()


async def ws_peer_client(args: argparse.Namespace) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    stats, window = Stats(), Window(args.window)
    payload = os.urandom(args.size)
    async with connect(args.url, compression=None, max_size=None) as ws:

        async def reader() -> None:
            async for _ in ws:
                stats.replies += 1
                window.give()

        async def send_n(n: int) -> None:
            for _ in range(n):
                await ws.send(payload)

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            result = await drive(send_n, stats, window, args.warmup, args.seconds)
            tg.cancel_scope.cancel()
    return result


def _frames(buffer: bytearray) -> tuple[int, int]:
    """(complete frames, bytes they take) at the start of a length-prefixed ``buffer``."""
    count = pos = 0
    end = len(buffer)
    while end - pos >= 4:
        stop = pos + 4 + int.from_bytes(buffer[pos : pos + 4], "big")
        if stop > end:
            break
        count += 1
        pos = stop
    return count, pos


def _quic_config(is_client: bool) -> Any:
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(is_client=is_client, alpn_protocols=["bench"], idle_timeout=60.0)
    if is_client:
        config.verify_mode = ssl.CERT_NONE
    else:
        from flare_drivers._tls import self_signed

        cert = self_signed()
        config.certificate, config.private_key = cert.certificate, cert.private_key
    return config


async def quic_peer_server(args: argparse.Namespace) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.quic.events import QuicEvent, StreamDataReceived

    class Echo(QuicConnectionProtocol):
        """Echoes every complete length-prefixed frame of each stream."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.buffers: dict[int, bytearray] = {}

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, StreamDataReceived):
                buffer = self.buffers.setdefault(event.stream_id, bytearray())
                buffer += event.data
                _, pos = _frames(buffer)
                if pos:
                    self._quic.send_stream_data(event.stream_id, bytes(buffer[:pos]))
                    del buffer[:pos]
                # QuicConnectionProtocol transmits after handling the datagram's events.

    server = await serve("127.0.0.1", 0, configuration=_quic_config(False), create_protocol=Echo)
    host, port = server._transport.get_extra_info("sockname")[:2]
    emit({"quic": f"{host}:{port}"})
    try:
        await _until_terminated()
    finally:
        server.close()


async def quic_peer_client(args: argparse.Namespace) -> dict[str, Any]:
    from aioquic.asyncio import QuicConnectionProtocol, connect
    from aioquic.quic.events import QuicEvent, StreamDataReceived

    stats, window = Stats(), Window(args.window)
    payload = os.urandom(args.size)
    frame = len(payload).to_bytes(4, "big") + payload

    class Counter(QuicConnectionProtocol):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.buffer = bytearray()

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, StreamDataReceived):
                self.buffer += event.data
                count, pos = _frames(self.buffer)
                if count:
                    del self.buffer[:pos]
                    stats.replies += count
                    window.give(count)

    host, _, port = args.url.removeprefix("quic://").rpartition(":")
    async with connect(
        host, int(port), configuration=_quic_config(True), create_protocol=Counter
    ) as client:
        stream = client._quic.get_next_available_stream_id()

        async def send_n(n: int) -> None:
            client._quic.send_stream_data(stream, frame * n)
            client.transmit()

        result = await drive(send_n, stats, window, args.warmup, args.seconds)
    return result


# -- processes ---------------------------------------------------------------------------------


async def _until_terminated() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        with anyio.move_on_after(MAX_LIFE):
            async for _ in signals:
                return


ROLES: dict[str, Callable[[argparse.Namespace], Awaitable[Any]]] = {
    "flare-server": flare_server,
    "flare-client": flare_client,
    "ws-peer-server": ws_peer_server,
    "ws-peer-client": ws_peer_client,
    "quic-peer-server": quic_peer_server,
    "quic-peer-client": quic_peer_client,
}


def run_role(args: argparse.Namespace) -> None:
    async def main() -> None:
        with anyio.fail_after(MAX_LIFE):
            result = await ROLES[args.role](args)
        if result is not None:
            result["rusage_max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            emit(result)

    anyio.run(main)


def _client(role: str, url: str, quick: bool, user: str | None = None) -> Child:
    warmup, seconds = (0.3, 0.7) if quick else (0.5, 2.0)
    return Child(
        [
            str(Path(__file__).resolve()),
            *(["--user", user] if user else []),
            "--role",
            role,
            "--url",
            url,
            "--warmup",
            str(warmup),
            "--seconds",
            str(seconds),
            "--window",
            str(WINDOW),
            "--size",
            str(SIZE),
        ]
    )


def _sample(
    role: str, url: str, quick: bool, server: Child, user: str | None = None
) -> dict[str, Any]:
    cpu = cpu_seconds(server.pid)
    with _client(role, url, quick, user) as child:
        result = child.line(timeout=60)
        child.wait(30)
    # Server CPU over the whole sample (handshake and warm-up included) per reply sent.
    result["server_cpu_per_msg_us"] = (
        (cpu_seconds(server.pid) - cpu) / max(1, result["replies_total"]) * 1e6
    )
    if role == "flare-client" and result.get("format") != "PROTOBUF":
        raise RuntimeError(f"flare negotiated {result.get('format')}, not Protobuf")
    if result.get("in_flight_left"):
        raise RuntimeError(f"{role}: {result['in_flight_left']} messages never answered")
    if result.get("out_of_order") or result.get("closed"):
        raise RuntimeError(f"{role}: protocol check failed: {result}")
    return result


ROWS = [
    ("P3", "WS pipelined SEND->ACK, msgs/s", "websockets echo", 1.0),
    ("P4", "QUIC pipelined SEND->ACK, msgs/s", "aioquic echo", 0.8),
]
"""(id, what, peer, goal ratio) of each row."""


def measure(quick: bool, only: str | None = None, repeats: int | None = None) -> list[Row]:
    """P3 (WebSocket) and P4 (QUIC) rows: ACKs per second, flare against its bare peer
    (``only``: just that row; ``repeats``: default 3 with ``quick``, else 5)."""
    repeats = repeats or (3 if quick else 5)
    me = str(Path(__file__).resolve())
    samples: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    with children(
        [me, "--role", "flare-server"],
        [me, "--role", "ws-peer-server"],
        [me, "--role", "quic-peer-server"],
    ) as (flare, ws_peer, quic_peer):
        flare_addr, ws_addr, quic_addr = flare.line(), ws_peer.line(), quic_peer.line()
        cases = {
            "P3": [
                ("flare", "flare-client", f"ws://{flare_addr['ws']}", flare),
                ("peer", "ws-peer-client", f"ws://{ws_addr['ws']}", ws_peer),
                ("identified", "flare-client", f"ws://{flare_addr['ws']}", flare),
            ],
            "P4": [
                ("flare", "flare-client", f"quic://{flare_addr['quic']}", flare),
                ("peer", "quic-peer-client", f"quic://{quic_addr['quic']}", quic_peer),
            ],
        }
        if only is not None:
            cases = {only: cases[only]}
        for i in range(repeats):
            for row, pair in cases.items():
                for side, role, url, server in pair if i % 2 == 0 else pair[::-1]:
                    user = "bench" if side == "identified" else None
                    samples[f"{row}-{side}"].append(_sample(role, url, quick, server, user))
    note = f"window {WINDOW}, {SIZE} B payloads, {repeats} interleaved repeats"
    rows = []
    for id, what, peer_name, goal in ROWS:
        if id not in cases:
            continue
        flare_runs, peer_runs = samples[f"{id}-flare"], samples[f"{id}-peer"]
        row = speed_row(
            id,
            what,
            peer_name,
            [s["rate"] for s in flare_runs],
            [s["rate"] for s in peer_runs],
            "msgs/s",
            goal,
            rate=True,
            note=note,
        )
        for side, runs in (("flare", flare_runs), ("peer", peer_runs)):
            row.extra[f"{side}_rates"] = [round(s["rate"]) for s in runs]
            row.extra[f"{side}_client_cpu_us_per_msg"] = [
                round(s["client_cpu_per_msg_us"], 1) for s in runs
            ]
            row.extra[f"{side}_server_cpu_us_per_msg"] = [
                round(s["server_cpu_per_msg_us"], 1) for s in runs
            ]
        row.extra["flare_pongs"] = [s["pongs"] for s in flare_runs]
        identified = samples.get(f"{id}-identified")
        if identified:
            # The same client with a user id: the hub's resend de-duplication on the path.
            rates = [s["rate"] for s in identified]
            row.extra["identified_rates"] = [round(r) for r in rates]
            row.extra["identified_ratio"] = round(
                paired_ratio(rates, [s["rate"] for s in peer_runs]), 2
            )
            row.extra["identified_server_cpu_us_per_msg"] = [
                round(s["server_cpu_per_msg_us"], 1) for s in identified
            ]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("P3", "P4"), help="measure one row only")
    parser.add_argument("--repeats", type=int, help="default 3 with --quick, else 5")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=WINDOW, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        with contextlib.suppress(KeyboardInterrupt):
            run_role(args)
        return
    start = time.monotonic()
    for row in measure(args.quick, args.only, args.repeats):
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        print(
            f"{row.id}  {row.measure}: flare {row.flare:,.0f}  {row.peer_name} "
            f"{row.peer or 0:,.0f}  ratio {ratio} (goal >= {row.goal:g}, "
            f"{'met' if row.met else 'NOT met'})  [{row.note}]"
        )
        print("    " + json.dumps(row.to_json()))
    print(f"({time.monotonic() - start:.1f} s)")


if __name__ == "__main__":
    main()
