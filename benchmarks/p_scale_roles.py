"""Child processes of ``benchmarks/p_scale.py`` (P7, P8): servers and client fleets.

Run as ``python benchmarks/p_scale_roles.py ROLE [options]`` by the orchestrator, never by
hand. Every role prints JSON lines on stdout (:func:`_common.emit`) and is steered with
signals, because :class:`_common.Child` closes the children's stdin:

* servers (``flare-server``, ``ws-server``) print ``{"address": "127.0.0.1:PORT"}`` once
  listening. SIGUSR2 marks the start of a measurement window (the live connections are
  remembered, the inbound message counter restarts) and prints ``{"marked": ...}``;
  SIGUSR1 runs ``gc.collect()`` and prints ``{"stats": ...}`` (the parent reads the RSS
  after that line, so both servers are measured right after a full collection).
* client fleets (``flare-clients``, ``ws-clients``) first open and close ``--warmup``
  connections and print ``{"warmed": true}`` (so lazy imports and first-use caches of the
  server are not counted per connection), wait for SIGUSR2, then open ``--count``
  connections with at most ``--concurrency`` handshakes in flight and print
  ``{"ready": ...}``. Afterwards SIGUSR2 remembers each connection's heartbeat RTT and
  SIGUSR1 prints ``{"status": ...}``: connections still up, and how many saw a new PONG
  since the mark.

Each child ends by itself after ``--max-life`` seconds; the parent terminates it earlier.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
from _common import emit, raise_nofile

MARK = signal.SIGUSR2
REPORT = signal.SIGUSR1


def _tasks() -> int:
    """Live asyncio tasks (every role runs on the asyncio backend)."""
    return len(asyncio.all_tasks())


class Signals:
    """SIGUSR2 (mark) and SIGUSR1 (report) handlers, installed once for the process's
    whole life: an uncaught SIGUSR1/2 would kill it, so the receiver must exist before
    the first line the parent could answer with a signal."""

    def __init__(self) -> None:
        self.on_mark: Callable[[], None] = lambda: None
        self.on_report: Callable[[], None] = lambda: None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(MARK, REPORT) as signals:
            task_status.started()
            async for signum in signals:
                (self.on_mark if signum == MARK else self.on_report)()


SIGNALS = Signals()


class GcClock:
    """Counts the garbage collector's runs and CPU time (``gc.callbacks``) since ``reset``."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self.longest = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self.longest = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            pause = time.process_time() - self._started
            self.collections[info["generation"]] += 1
            self.seconds += pause
            self.longest = max(self.longest, pause)


GC_CLOCK = GcClock()


async def _serve_signals(on_mark: Callable[[], None], on_report: Callable[[], None]) -> None:
    """Answer the parent's signals with these handlers until the process ends."""
    SIGNALS.on_mark, SIGNALS.on_report = on_mark, on_report
    await anyio.sleep_forever()


# -- servers -----------------------------------------------------------------------------------


async def flare_server(args: argparse.Namespace) -> None:
    """A default-configured :class:`~flare_drivers.Hub` on one WebSocket listener."""
    from flare_drivers import Connection, Hub, Listener, serve

    hub = Hub()
    accepted = disconnects = 0
    messages = 0
    marked: set[str] | None = None

    @hub.on_connect
    async def connected(conn: Connection) -> None:
        nonlocal accepted
        accepted += 1

    @hub.on_disconnect
    async def disconnected(conn: Connection) -> None:
        nonlocal disconnects
        disconnects += 1

    if args.count_messages:
        # Count inbound transport messages (PINGs once everything is connected) to prove
        # that a heartbeat round happened in the window. One wrapper per connection: a
        # few hundred bytes and ~1 µs per message, only in P8 (not in the memory test).
        handle = hub.handle_transport

        async def counting(transport: Any) -> None:
            receive = transport.receive

            async def counted() -> Any:
                nonlocal messages
                item = await receive()
                if isinstance(item, bytes):
                    messages += 1
                return item

            transport.receive = counted
            # The driver takes messages already buffered with receive_nowait: count those.
            nowait = getattr(transport, "receive_nowait", None)
            if nowait is not None:

                def counted_nowait() -> Any:
                    nonlocal messages
                    item = nowait()
                    if isinstance(item, bytes):
                        messages += 1
                    return item

                transport.receive_nowait = counted_nowait
            await handle(transport)

        hub.handle_transport = counting  # type: ignore[method-assign]

    def live() -> set[str]:
        return {c.id for c in hub.connections.values() if c.accepted}

    profiler: cProfile.Profile | None = None

    def mark() -> None:
        nonlocal marked, messages, profiler
        # A full collection first: the ramp-up promoted a few hundred thousand objects,
        # and the gen-2 collection they are bound to trigger soon (~1 s of CPU with
        # 10,000 connections) is a cost of connecting, not of holding.
        gc.collect()
        marked = live()
        messages = 0
        GC_CLOCK.reset()
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
        emit({"marked": True, "live": len(marked)})

    def report() -> None:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        collections, gc_seconds = list(GC_CLOCK.collections), GC_CLOCK.seconds
        gc_longest = GC_CLOCK.longest
        gc.collect()
        now_live = live()
        emit(
            {
                "stats": True,
                "live": len(now_live),
                "connections": len(hub.connections),
                "accepted_total": accepted,
                "disconnects": disconnects,
                "held": None if marked is None else len(marked & now_live),
                "messages_since_mark": messages,
                "gc_since_mark": collections,
                "gc_seconds_since_mark": round(gc_seconds, 4),
                "gc_longest_ms": round(gc_longest * 1000, 2),
                "tasks": _tasks(),
            }
        )

    async with anyio.create_task_group() as tg:
        bound = await tg.start(serve, hub, [Listener(kind="ws", port=0)])
        emit({"address": bound["ws"]})
        await _serve_signals(mark, report)


async def ws_server(args: argparse.Namespace) -> None:
    """A ``websockets`` server with its default settings, holding every connection open
    with the usual handler (read until the peer closes)."""
    from websockets.asyncio.server import ServerConnection, serve

    open_now: set[ServerConnection] = set()
    compression = None if args.no_compression else "deflate"

    async def handler(ws: ServerConnection) -> None:
        open_now.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            open_now.discard(ws)

    def mark() -> None:
        emit({"marked": True, "live": len(open_now)})

    def report() -> None:
        gc.collect()
        emit({"stats": True, "live": len(open_now), "tasks": _tasks()})

    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        emit({"address": f"127.0.0.1:{port}"})
        await _serve_signals(mark, report)


# -- client fleets -----------------------------------------------------------------------------


class Fleet:
    """One process's share of the client connections: its options, its stop event and
    the heartbeat RTTs seen at the last mark."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = anyio.Event()
        self.marked_rtts: list[float | None] = []


async def flare_clients(args: argparse.Namespace) -> None:
    """``--count`` :class:`~flare_drivers.Client` connections, Protobuf, each with its own
    user id and the given heartbeat interval."""
    from flare_drivers import Client, ClientClosed, ConnectionState
    from flare_proto import ClientConfig, Format

    fleet = Fleet(args)
    clients: list[Client] = []
    failed = 0

    def config(i: int) -> ClientConfig:
        return ClientConfig(
            format=Format.PROTOBUF,
            user_id=f"{args.prefix}{i}",
            heartbeat_interval=args.heartbeat,
            heartbeat_timeout=3 * args.heartbeat,
        )

    def opener(keep: bool) -> Callable[[int, Callable[[], None]], Awaitable[None]]:
        async def open_one(i: int, release: Callable[[], None]) -> None:
            nonlocal failed
            client = Client([args.url], config(i), connect_timeout=args.connect_timeout)
            async with client:
                with anyio.move_on_after(args.connect_timeout), contextlib.suppress(ClientClosed):
                    await client.wait_connected()
                if client.state is not ConnectionState.CONNECTED:
                    failed += 1
                    release()
                    return
                release()
                if keep:
                    clients.append(client)
                    await fleet.stop.wait()

        return open_one

    def mark() -> None:
        fleet.marked_rtts = [c.rtt for c in clients]
        emit({"marked": True})

    def report() -> None:
        up = [c.state is ConnectionState.CONNECTED for c in clients]
        now_rtts = [c.rtt for c in clients]
        fresh = [
            r
            for r, old in zip(now_rtts, fleet.marked_rtts, strict=False)
            if r is not None and r != old
        ]
        emit(
            {
                "status": True,
                "connected": sum(up),
                "failed": failed,
                "new_rtt": len(fresh),
                "rtt_max_ms": round(max(fresh, default=0.0) * 1000, 2),
            }
        )

    await _run_fleet(fleet, opener, mark, report, lambda: len(clients), lambda: failed)


async def ws_clients(args: argparse.Namespace) -> None:
    """``--count`` ``websockets`` client connections with the library's defaults."""
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.protocol import State

    fleet = Fleet(args)
    conns: list[ClientConnection] = []
    failed = 0
    compression = None if args.no_compression else "deflate"

    def opener(keep: bool) -> Callable[[int, Callable[[], None]], Awaitable[None]]:
        async def open_one(i: int, release: Callable[[], None]) -> None:
            nonlocal failed
            try:
                ws = await connect(
                    f"ws://{args.url.partition('://')[2]}",
                    open_timeout=args.connect_timeout,
                    compression=compression,
                    proxy=None,
                )
            except Exception:
                failed += 1
                return
            release()
            if keep:
                conns.append(ws)
                await fleet.stop.wait()
            else:
                await ws.close()

        return open_one

    def report() -> None:
        up = sum(ws.state is State.OPEN for ws in conns)
        emit({"status": True, "connected": up, "failed": failed, "new_rtt": None})

    await _run_fleet(
        fleet, opener, lambda: emit({"marked": True}), report, lambda: len(conns), lambda: failed
    )


async def _run_fleet(
    fleet: Fleet,
    opener: Callable[[bool], Callable[[int, Callable[[], None]], Awaitable[None]]],
    mark: Callable[[], None],
    report: Callable[[], None],
    connected: Callable[[], int],
    failed: Callable[[], int],
) -> None:
    """The fleet's life: warm-up, wait for the go signal, open and hold, serve signals."""
    args = fleet.args
    if args.warmup:
        # Opened and closed again before the server's baseline RSS is read.
        await _open_all(fleet, opener(False), args.warmup)
        emit({"warmed": True})
        go = anyio.Event()
        SIGNALS.on_mark = go.set
        await go.wait()
    t0 = time.monotonic()
    async with anyio.create_task_group() as tg:
        opened = anyio.Event()

        async def open_and_hold() -> None:
            await _open_all(fleet, opener(True), args.count, opened)

        tg.start_soon(open_and_hold)
        await opened.wait()
        emit(
            {
                "ready": True,
                "connected": connected(),
                "failed": failed(),
                "ramp_s": round(time.monotonic() - t0, 2),
            }
        )
        await _serve_signals(mark, report)


async def _open_all(
    fleet: Fleet,
    open_one: Callable[[int, Callable[[], None]], Awaitable[None]],
    count: int,
    opened: anyio.Event | None = None,
) -> None:
    """Run ``open_one`` ``count`` times, ``--concurrency`` handshakes at a time; set
    ``opened`` once every handshake finished (the held connections stay in their tasks)."""
    gate = anyio.Semaphore(fleet.args.concurrency)
    finished = 0
    all_done = anyio.Event()

    async def attempt(i: int) -> None:
        await gate.acquire()
        released = False

        def release() -> None:
            nonlocal released, finished
            if released:
                return
            released = True
            gate.release()
            finished += 1
            if finished == count:
                all_done.set()

        try:
            await open_one(i, release)
        except Exception as exc:  # one failed connection must not end the fleet
            print(f"connection {i} failed: {exc!r}", file=sys.stderr)
        finally:
            release()

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(attempt, i)
        await all_done.wait()
        if opened is not None:
            opened.set()
        # Held connections end only with the process (or ``fleet.stop``).


# -- command line ------------------------------------------------------------------------------

ROLES: dict[str, Callable[[argparse.Namespace], Awaitable[None]]] = {
    "flare-server": flare_server,
    "ws-server": ws_server,
    "flare-clients": flare_clients,
    "ws-clients": ws_clients,
}


def main() -> None:
    """Parse the role's options and run it on asyncio, bounded by ``--max-life``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--url", default="")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--heartbeat", type=float, default=30.0)
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--prefix", default="u")
    p.add_argument("--count-messages", action="store_true")
    p.add_argument("--no-compression", action="store_true")
    p.add_argument("--profile", help="flare-server: cProfile output of the marked window")
    p.add_argument("--max-life", type=float, default=300.0)
    args = p.parse_args()
    raise_nofile()

    async def bounded() -> None:
        with anyio.move_on_after(args.max_life):
            async with anyio.create_task_group() as tg:
                await tg.start(SIGNALS.run)
                await ROLES[args.role](args)
                tg.cancel_scope.cancel()

    anyio.run(bounded)


if __name__ == "__main__":
    main()
