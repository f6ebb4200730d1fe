"""Load/soak test: many flare connections over WS and QUIC, heartbeats and chat traffic.

Bounded and loopback only. Three kinds of process, all running this script:

* the **server** (``--role server``): a :class:`~flare_drivers.Hub` on a WebSocket and a
  QUIC listener (127.0.0.1, any free port) with a *relay* room: a SEND carrying metadata
  ``to`` (comma-separated user ids) is delivered, as a new SEND with the same payload and
  metadata ``from``, to exactly those users, then ACKed to the sender (DESIGN §6). With
  ``--mode chat`` the server is the stock ``python -m flare_drivers serve`` instead, whose
  room broadcasts every SEND to every other connection (O(n) deliveries per message: use
  a low ``--rate``);
* ``--procs`` **client** processes (``--role client``), each running its share of the
  ``--connections`` flare :class:`~flare_drivers.Client`\\ s; connection ``i`` is user
  ``u{i}``, QUIC for the first ``--quic-share`` of the indices, WebSocket for the rest,
  Protobuf or JSON alternately, PING every ``--heartbeat`` seconds (heartbeat timeout 3×
  that, so a stalled connection shows up as a reconnect during the run);
* the **orchestrator** (no ``--role``): starts the others, waits until every client
  process has its connections up, starts the traffic at the same instant everywhere,
  samples the server's (and the clients') CPU and RSS from ``/proc`` once a second,
  collects the results and prints the table.

Traffic model: ``--rate`` SENDs per second in total, evenly spaced, split between the
client processes in proportion to their connections. Each SEND comes from a random
connection of that process and names ``--fanout`` distinct random receivers among all
other connections (any process, any transport). Its payload is JSON with a unique id and
the sender's ``time.time()``, padded to ``--size`` bytes; the receiver's SEND handler
(``client.router``, run in its connection's loop) records ``time.time()`` - that stamp
(same machine, same clock) as the delivery latency.
Traffic runs for ``--seconds``; then the senders wait for every outstanding ACK (at most
the ACK timeout) and every process keeps receiving for ``--grace`` seconds.

Counted per (message, intended receiver): *lost* = the sender got the ACK but the
receiver never got the message (goal 0). Also: SENDs that failed (ACK timeout, close),
duplicates, misrouted deliveries, reconnects with their close codes, heartbeat round trips
observed (each client's ``rtt`` sampled once a second), log warnings/errors of every
process, garbage-collector pauses of every process (``gc.callbacks``), UDP datagrams
dropped by the kernel on the QUIC sockets (``/proc/net/udp``), and the CPU taken by
processes that are not the soak's (the machine may be shared): latency is also reported
over the "quiet" seconds only, when those took < 25 % of a core. ``--json`` adds a
per-second timeline.

    .venv/bin/python benchmarks/soak.py                  # 2,000 connections, 60 s
    .venv/bin/python benchmarks/soak.py --quick          # 400 connections, 20 s
    .venv/bin/python benchmarks/soak.py --mode chat --json soak.json   # broadcast, 1 SEND/s

Everything stops by itself: each child has a hard deadline, the orchestrator kills
whatever is left in ``finally``. The soft RLIMIT_NOFILE is raised to the hard limit in
every process (the server needs one descriptor per WebSocket connection).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import logging
import math
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
from _common import raise_nofile

from flare_drivers import (
    Client,
    ClientClosed,
    Connection,
    ConnectionState,
    Hub,
    Listener,
    SendFailed,
    StateChanged,
    serve,
)
from flare_proto import ClientConfig, CommandKind, Format, Frame, FrameReceived, Kicked

log = logging.getLogger("soak")

HZ = os.sysconf("SC_CLK_TCK")
QUIET_OTHERS_PCT = 25.0
"""A second is "quiet" when processes other than the soak's took less CPU than this
(% of one core) from that second to 2 s later: the machine may be shared."""


class GcPauses:
    """Records the garbage collector's pauses in this process (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.count = [0, 0, 0]
        self.total = 0.0
        self.longest = 0.0
        self.long: list[tuple[float, int, float]] = []  # (wall time, generation, seconds)
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        pause = time.perf_counter() - self.started
        gen = info["generation"]
        self.count[gen] += 1
        self.total += pause
        self.longest = max(self.longest, pause)
        if pause >= 0.02 and len(self.long) < 200:
            self.long.append((time.time(), gen, pause))

    def summary(self) -> dict[str, Any]:
        return {
            "collections": self.count,
            "total_s": round(self.total, 3),
            "longest_ms": round(self.longest * 1000, 1),
            "over_20ms": [(t, g, round(p * 1000, 1)) for t, g, p in self.long],
        }


GC = GcPauses()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (``None`` when empty)."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# -- server role -------------------------------------------------------------------------------


async def server_role(args: argparse.Namespace) -> None:
    raise_nofile()
    hub = Hub(max_connections=args.max_connections)
    users: dict[str, Connection] = {}
    stats: Counter[str] = Counter()
    live = 0

    @hub.on_connect
    async def connected(conn: Connection) -> None:
        nonlocal live
        live += 1
        stats["accepted"] += 1
        stats["peak_live"] = max(stats["peak_live"], live)
        if conn.user_id is not None:
            users[conn.user_id] = conn

    @hub.on_disconnect
    async def disconnected(conn: Connection) -> None:
        nonlocal live
        live -= 1
        code = conn.core.close_code
        stats[f"closed:{'none' if code is None else code.code}"] += 1
        if conn.user_id is not None and users.get(conn.user_id) is conn:
            del users[conn.user_id]

    @hub.router.on(CommandKind.SEND)
    async def relay(conn: Connection, frame: Frame) -> None:
        stats["sends"] += 1
        message = frame.command.message
        to = message.metadata.get("to")
        if to is None:
            stats["no_target"] += 1
            return
        sender = conn.user_id or conn.id
        for name in to.decode().split(","):
            target = users.get(name)
            if target is not None and target.accepted:
                target.send_message(message.payload, metadata={"from": sender})
                stats["delivered"] += 1
            else:
                stats["undeliverable"] += 1

    listeners = [Listener(kind="ws", port=0), Listener(kind="quic", port=0)]
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async with anyio.create_task_group() as tg:
            bound = await tg.start(serve, hub, listeners)
            print(json.dumps(bound), flush=True)
            with anyio.move_on_after(args.max_life):
                async for signum in signals:
                    if signum != signal.SIGUSR1:
                        break
                    # A snapshot at the end of the measurement, before the clients close.
                    stats["live_at_end"] = len(hub.connections)
                    snapshot = {"server_stats": dict(stats), "gc": GC.summary()}
                    print(json.dumps(snapshot), flush=True)
            with anyio.move_on_after(5):
                await hub.shutdown(grace=2.0)
            tg.cancel_scope.cancel()


# -- client role -------------------------------------------------------------------------------


class ClientProcess:
    """One client process: its share of the connections, its share of the traffic."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        n = args.connections
        self.quic_count = round(n * args.quic_share)
        self.mine = [i for i in range(n) if i % args.procs == args.index]
        self.clients: dict[int, Client] = {}
        self.connected: set[int] = set()
        self.failed: list[int] = []
        self.connect_ms: list[float] = []
        self.stop = anyio.Event()
        self.all_started = anyio.Event()
        self.started = 0
        self.measuring = False
        self.phase = "ramp-up"  # then "traffic+grace", then "closing"
        # message id -> [sender, targets, t_sent, acked, ack_latency_s, fail_reason]
        self.sent: dict[str, list[Any]] = {}
        self.received: list[tuple[str, int, float, str]] = []
        self.state_events: Counter[str] = Counter()
        self.rtts: list[float] = []
        self.pong_clients: set[int] = set()
        self.outstanding = 0
        self.settled = anyio.Event()
        self.rng = random.Random(1000 + args.index)
        self.pad = ""
        self.payload_bytes = 0

    def url(self, i: int) -> str:
        a = self.args
        return f"quic://{a.quic_addr}" if i < self.quic_count else f"ws://{a.ws_addr}"

    def config(self, i: int) -> ClientConfig:
        a = self.args
        fmt = a.format
        if fmt == "mix":
            fmt = "protobuf" if (i // a.procs) % 2 == 0 else "json"
        return ClientConfig(
            format=Format.PROTOBUF if fmt == "protobuf" else Format.JSON,
            user_id=f"u{i}",
            heartbeat_interval=a.heartbeat,
            heartbeat_timeout=3 * a.heartbeat,
            ack_timeout=a.ack_timeout,
        )

    def receiver(self, i: int) -> Any:
        """The SEND handler of connection ``i``: runs in its connection's loop, in order,
        as the frame is processed (not later, when the event queue is read)."""

        async def on_send(client: Client, frame: Frame) -> None:
            t = time.time()
            message = frame.command.message
            try:
                body = orjson.loads(message.payload)
                sender = message.metadata.get("from", b"").decode()
                self.received.append((body["id"], i, t - body["t"], sender))
            except (ValueError, KeyError, TypeError):
                self.state_events["bad_payload"] += 1

        return on_send

    async def consume(self, client: Client, i: int) -> None:
        """Drain the client's events (state changes; frames were recorded already)."""
        async for event in client:
            if isinstance(event, FrameReceived):
                if event.kind is not CommandKind.SEND:
                    self.state_events["unexpected_frame"] += 1
            elif isinstance(event, StateChanged):
                if event.state in (ConnectionState.RECONNECTING, ConnectionState.CLOSED):
                    code = "none" if event.code is None else event.code.code
                    kind = "QUIC" if i < self.quic_count else "WS"
                    label = f"{event.state.value} ({code}, {kind}, {self.phase})"
                    self.state_events[label] += 1
            elif isinstance(event, Kicked):
                self.state_events["kicked"] += 1

    async def run_client(self, i: int, gate: anyio.Semaphore) -> None:
        await gate.acquire()
        holding = True
        try:
            t0 = time.perf_counter()
            client = Client([self.url(i)], self.config(i), quic_verify=False)
            client.router.on(CommandKind.SEND)(self.receiver(i))
            async with client, anyio.create_task_group() as tg:
                self.clients[i] = client
                tg.start_soon(self.consume, client, i)
                with anyio.move_on_after(self.args.connect_timeout):
                    with contextlib.suppress(ClientClosed):
                        await client.wait_connected()
                if client.state is ConnectionState.CONNECTED:
                    self.connected.add(i)
                    self.connect_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    self.failed.append(i)
                gate.release()
                holding = False
                self._count_started()
                await self.stop.wait()
                tg.cancel_scope.cancel()
        except Exception as exc:
            log.error("client u%d failed: %r", i, exc)
            if i not in self.connected and i not in self.failed:
                self.failed.append(i)
                self._count_started()
        finally:
            if holding:
                gate.release()

    def _count_started(self) -> None:
        self.started += 1
        if self.started == len(self.mine):
            self.all_started.set()

    async def send_one(self, sender: int, targets: list[int], ident: str) -> None:
        client = self.clients[sender]
        t = time.time()
        payload = orjson.dumps({"id": ident, "t": t, "pad": self.pad})
        self.payload_bytes += len(payload)
        record = self.sent[ident] = [sender, targets, t, False, None, "unresolved at the end"]
        metadata = None
        if targets:
            metadata = {"to": ",".join(f"u{j}" for j in targets)}
        try:
            await client.send(payload, metadata=metadata)
            record[3] = True
            record[4] = time.time() - t
            record[5] = None
        except SendFailed as exc:
            record[5] = exc.reason
        except ClientClosed as exc:
            record[5] = f"client closed: {exc}"
        except Exception as exc:
            record[5] = repr(exc)
        finally:
            self.outstanding -= 1
            if self.outstanding == 0 and not self.measuring:
                self.settled.set()

    async def traffic(self, start: float, exclude: set[int]) -> None:
        a = self.args
        senders = [i for i in self.mine if i in self.connected]
        candidates = [i for i in range(a.connections) if i not in exclude]
        rate = a.rate * len(self.mine) / a.connections
        if not senders or rate <= 0 or len(candidates) < 2:
            # Heartbeats only: idle for the same window.
            await anyio.sleep(max(0.0, start - time.time()))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.sample_rtts)
                await anyio.sleep(a.seconds)
                tg.cancel_scope.cancel()
            return
        self.pad = "x" * max(0, a.size - 60)
        fanout = min(a.fanout, len(candidates) - 1)
        interval = 1.0 / rate
        await anyio.sleep(max(0.0, start - time.time()))
        self.measuring = True
        mono0 = time.monotonic()
        end = mono0 + a.seconds
        seq = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.sample_rtts)
            while True:
                due = mono0 + seq * interval
                if due >= end:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                sender = self.rng.choice(senders)
                targets: list[int] = []
                if a.mode == "relay":
                    while len(targets) < fanout:
                        j = self.rng.choice(candidates)
                        if j != sender and j not in targets:
                            targets.append(j)
                self.outstanding += 1
                tg.start_soon(self.send_one, sender, targets, f"{a.index}-{seq}")
                seq += 1
            self.measuring = False
            if self.outstanding == 0:
                self.settled.set()
            # Every SEND resolves within ack_timeout once connected; bound it anyway.
            with anyio.move_on_after(a.ack_timeout + 5):
                await self.settled.wait()
            tg.cancel_scope.cancel()

    async def sample_rtts(self) -> None:
        last: dict[int, float | None] = {}
        while True:
            for i, client in self.clients.items():
                rtt = client.rtt
                if rtt is not None and rtt != last.get(i):
                    last[i] = rtt
                    self.rtts.append(rtt)
                    self.pong_clients.add(i)
            await anyio.sleep(1.0)

    def results(self) -> dict[str, Any]:
        return {
            "index": self.args.index,
            "sent": self.sent,
            "received": self.received,
            "state_events": dict(self.state_events),
            "rtts": self.rtts,
            "pong_clients": len(self.pong_clients),
            "connected": len(self.connected),
            "failed": self.failed,
            "connect_ms": self.connect_ms,
            "gc": GC.summary(),
            "payload_bytes": self.payload_bytes,
        }


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def client_role(args: argparse.Namespace) -> None:
    raise_nofile()
    proc = ClientProcess(args)
    gate = anyio.Semaphore(args.connect_concurrency)
    t0 = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in proc.mine:
            tg.start_soon(proc.run_client, i, gate)
        with anyio.move_on_after(args.ramp_timeout):
            await proc.all_started.wait()
        _emit(
            {
                "ready": True,
                "connected": len(proc.connected),
                "failed": sorted(proc.failed),
                "ramp_s": time.monotonic() - t0,
            }
        )
        line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if line.strip():
            go = json.loads(line)
            proc.phase = "traffic+grace"
            await proc.traffic(go["start"], set(go["exclude"]))
            await anyio.sleep(args.grace)
            proc.phase = "closing"
            Path(args.results).write_bytes(orjson.dumps(proc.results()))
            _emit({"done": True})
            # Stay connected until every process is done and the server has counted.
            with anyio.move_on_after(60):
                await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        proc.phase = "closing"
        proc.stop.set()
        # Clean closes run concurrently; bounded so the process always ends.
        with anyio.move_on_after(15):
            while proc.clients and any(
                c.state is not ConnectionState.CLOSED for c in proc.clients.values()
            ):
                await anyio.sleep(0.2)
        tg.cancel_scope.cancel()


def run_child(args: argparse.Namespace, role: Any) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def bounded() -> None:
        with anyio.move_on_after(args.max_life):
            await role(args)

    try:
        anyio.run(bounded)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)  # do not wait for an abandoned stdin reader thread


# -- orchestrator ----------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Samples utime+stime, VmRSS and open descriptors of some pids once a second."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: list[tuple[float, str, int, int, int]] = []  # t, name, ticks, rss, fds
        self.hwm: dict[str, int] = {}
        self.machine: list[tuple[float, int, int]] = []  # t, busy ticks, total ticks
        self.quic_port: int | None = None
        # UDP socket inode -> (side, drops): the server's QUIC socket and the clients'.
        self.udp_drops: dict[str, tuple[str, int]] = {}
        self.udp_server_series: list[tuple[float, int]] = []  # t, server socket drops
        self._halt = threading.Event()

    def read(self, name: str, pid: int) -> None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rpartition(")")[2].split()
            ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            rss = hwm = 0
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, ValueError, IndexError):
            return
        self.hwm[name] = max(self.hwm.get(name, 0), hwm)
        self.samples.append((time.time(), name, ticks, rss, fds))

    def run(self) -> None:
        while not self._halt.is_set():
            for name, pid in list(self.pids.items()):
                self.read(name, pid)
            self.read("orchestrator", os.getpid())
            try:
                cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
                idle = cpu[3] + cpu[4]  # idle + iowait
                self.machine.append((time.time(), sum(cpu) - idle, sum(cpu)))
            except (OSError, ValueError, IndexError):
                pass
            self.read_udp()
            self._halt.wait(1.0)

    def read_udp(self) -> None:
        """Per-socket receive drops from /proc/net/udp for sockets on the QUIC port."""
        if self.quic_port is None:
            return
        try:
            rows = Path("/proc/net/udp").read_text().splitlines()[1:]
        except OSError:
            return
        for row in rows:
            f = row.split()
            try:
                local, remote, inode, drops = f[1], f[2], f[9], int(f[-1])
                if int(local.rpartition(":")[2], 16) == self.quic_port:
                    side = "server"
                elif int(remote.rpartition(":")[2], 16) == self.quic_port:
                    side = "clients"
                else:
                    continue
            except (IndexError, ValueError):
                continue
            old = self.udp_drops.get(inode, (side, 0))[1]
            self.udp_drops[inode] = (side, max(old, drops))
        self.udp_server_series.append((time.time(), self.udp_drops_by_side()["server"]))

    def udp_drops_by_side(self) -> dict[str, int]:
        out = {"server": 0, "clients": 0}
        for side, drops in self.udp_drops.values():
            out[side] += drops
        return out

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def of(
        self, name: str, t0: float = 0.0, t1: float = math.inf
    ) -> list[tuple[float, int, int, int]]:
        return [(t, k, r, f) for t, n, k, r, f in self.samples if n == name and t0 <= t <= t1]


def cpu_stats(samples: list[tuple[float, int, int, int]]) -> tuple[float | None, float | None]:
    """Mean and max (over 1-s intervals) CPU % of one process from its samples."""
    if len(samples) < 2:
        return None, None
    (ta, ka, _, _), (tb, kb, _, _) = samples[0], samples[-1]
    mean = 100.0 * (kb - ka) / HZ / (tb - ta)
    peak = max(
        100.0 * (k2 - k1) / HZ / (t2 - t1)
        for (t1, k1, _, _), (t2, k2, _, _) in itertools.pairwise(samples)
        if t2 > t1
    )
    return mean, peak


class Lines:
    """Each child's stdout lines, read by threads, delivered with a deadline."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def watch(self, name: str, proc: subprocess.Popen[str]) -> None:
        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.queue.put((name, line))
            self.queue.put((name, None))

        threading.Thread(target=pump, daemon=True).start()

    def wait(self, names: set[str], key: str, deadline: float) -> dict[str, dict[str, Any]]:
        """Wait for a JSON line containing ``key`` from each of ``names``."""
        got: dict[str, dict[str, Any]] = {}
        while set(got) != names:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {key!r} line from {sorted(names - set(got))}")
            try:
                name, line = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                if name in names and name not in got:
                    raise RuntimeError(f"{name} exited before its {key!r} line")
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if key in obj:
                got[name] = obj
        return got


def git_state() -> str:
    """``<short commit>`` plus ``+ uncommitted changes`` when flare's code differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "flare_proto", "flare_drivers"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def udp_counters() -> dict[str, int]:
    """Machine-wide UDP counters from /proc/net/snmp (RcvbufErrors = datagrams dropped
    because a socket's receive buffer was full)."""
    try:
        rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
        names, values = [r for r in rows if r and r[0] == "Udp:"][:2]
        return {k: int(v) for k, v in zip(names[1:], values[1:], strict=True)}
    except (OSError, ValueError):
        return {}


def log_summary(path: Path) -> tuple[int, int, list[str]]:
    """(warnings, errors incl. tracebacks, a few distinct examples) from a stderr file."""
    warnings = errors = 0
    examples: list[str] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0, 0, []
    for line in text.splitlines():
        kind = None
        if " WARNING " in line:
            warnings += 1
            kind = "W"
        elif " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
            errors += 1
            kind = "E"
        if kind:
            short = line.split(": ", 1)[-1][:160]
            if short not in examples and len(examples) < 5:
                examples.append(short)
    return warnings, errors, examples


def child_args(args: argparse.Namespace, role: str, **extra: Any) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--role", role]
    for key in (
        "connections",
        "quic_share",
        "seconds",
        "rate",
        "fanout",
        "size",
        "heartbeat",
        "ack_timeout",
        "grace",
        "procs",
        "format",
        "mode",
        "connect_concurrency",
        "connect_timeout",
        "ramp_timeout",
        "max_connections",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def orchestrate(args: argparse.Namespace) -> int:
    nofile = raise_nofile()  # children inherit it (flare serve in chat mode too)
    code_state = git_state()
    tmp = Path(tempfile.mkdtemp(prefix="flare-soak-"))
    procs: dict[str, subprocess.Popen[str]] = {}
    lines = Lines()
    sampler: Sampler | None = None
    max_life = args.ramp_timeout + args.seconds + args.ack_timeout + args.grace + 90
    t_begin = time.monotonic()
    hard_deadline = t_begin + max_life
    try:
        if args.mode == "chat":
            cmd = [sys.executable, "-m", "flare_drivers", "serve", "--ws", "127.0.0.1:0"]
            cmd += ["--quic", "127.0.0.1:0"]
        else:
            cmd = child_args(args, "server", max_life=max_life)
        with open(tmp / "server.err", "w") as err:
            procs["server"] = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True
            )
        lines.watch("server", procs["server"])
        bound = lines.wait({"server"}, "ws", time.monotonic() + 30)["server"]
        sampler = Sampler({"server": procs["server"].pid})
        sampler.quic_port = int(bound["quic"].rpartition(":")[2])
        sampler.start()
        time.sleep(1.5)  # a baseline RSS sample before any client
        t_clients = time.time()
        udp_before = udp_counters()
        names = {f"client{p}" for p in range(args.procs)}
        for p in range(args.procs):
            name = f"client{p}"
            cmd = child_args(
                args,
                "client",
                index=p,
                ws_addr=bound["ws"],
                quic_addr=bound["quic"],
                results=tmp / f"{name}.json",
                max_life=max_life,
            )
            with open(tmp / f"{name}.err", "w") as err:
                procs[name] = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=err, text=True
                )
            lines.watch(name, procs[name])
            sampler.pids[name] = procs[name].pid
        print(
            f"ramping up {args.connections} connections "
            f"({args.procs} client processes, server pid {procs['server'].pid}) ...",
            file=sys.stderr,
            flush=True,
        )
        ready = lines.wait(names, "ready", time.monotonic() + args.ramp_timeout + 30)
        t_ramp = time.monotonic() - t_begin
        exclude = sorted(j for r in ready.values() for j in r["failed"])
        start = time.time() + 2.0
        go = json.dumps({"start": start, "exclude": exclude}) + "\n"
        for name in names:
            stdin = procs[name].stdin
            assert stdin is not None
            stdin.write(go)
            stdin.flush()
        print(
            f"connected after {t_ramp:.1f} s; traffic for {args.seconds:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        lines.wait(
            names,
            "done",
            min(
                hard_deadline, time.monotonic() + args.seconds + args.ack_timeout + args.grace + 60
            ),
        )
        t_end_window = start + args.seconds
        udp_after = udp_counters()
        server_stats: dict[str, Any] = {}
        if args.mode == "relay":
            procs["server"].send_signal(signal.SIGUSR1)
            try:
                got = lines.wait({"server"}, "server_stats", time.monotonic() + 15)
                server_stats = got["server"]["server_stats"]
                server_stats["gc"] = got["server"]["gc"]
            except (TimeoutError, RuntimeError) as exc:
                print(f"no server stats: {exc}", file=sys.stderr)
        sampler.stop()
        for name in names:  # now the clients may close
            stdin = procs[name].stdin
            assert stdin is not None
            with contextlib.suppress(OSError):
                stdin.write("close\n")
                stdin.flush()
        for name in names:
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs[name].wait(30)
        procs["server"].send_signal(signal.SIGTERM)
        results = [orjson.loads((tmp / f"{name}.json").read_bytes()) for name in sorted(names)]
        report = analyse(
            args, results, ready, server_stats, sampler, t_clients, start, t_end_window, tmp
        )
        report["nofile"] = nofile
        report["config"]["flare_code"] = code_state
        report["udp"] = {
            k: udp_after[k] - udp_before.get(k, 0)
            for k in ("InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors")
            if k in udp_after
        }
        report["udp"]["drops_by_socket_side"] = sampler.udp_drops_by_side()
        print_report(args, report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if args.keep_logs:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def analyse(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    ready: dict[str, dict[str, Any]],
    server_stats: dict[str, Any],
    sampler: Sampler,
    t_clients: float,
    t0: float,
    t1: float,
    tmp: Path,
) -> dict[str, Any]:
    n = args.connections
    quic_count = round(n * args.quic_share)
    failed = {j for r in results for j in r["failed"]}
    alive = [j for j in range(n) if j not in failed]

    def transport(j: int) -> str:
        return "QUIC" if j < quic_count else "WS"

    sent: dict[str, list[Any]] = {}
    for r in results:
        sent.update(r["sent"])
    deliveries: Counter[tuple[str, int]] = Counter()
    latency: dict[tuple[str, int], float] = {}
    unknown = 0
    for r in results:
        for ident, receiver, lat, _sender in r["received"]:
            key = (ident, receiver)
            deliveries[key] += 1
            if ident not in sent:
                unknown += 1
            elif key not in latency:
                latency[key] = lat
    acked = {k: v for k, v in sent.items() if v[3]}
    fail_reasons = Counter(v[5] for v in sent.values() if not v[3])
    expected = lost = misrouted = delivered_unacked = 0
    lats: list[float] = []
    by_path: dict[str, list[float]] = {}
    lost_examples: list[str] = []
    for ident, (sender, targets, _t, ok, _al, _fr) in sent.items():
        intended = targets or [j for j in alive if j != sender]
        for j in intended:
            key = (ident, j)
            got = key in latency
            if ok:
                expected += 1
                if not got:
                    lost += 1
                    if len(lost_examples) < 5:
                        lost_examples.append(f"{ident} u{sender}->u{j}")
            elif got:
                delivered_unacked += 1
            if got:
                lats.append(latency[key])
                path = f"{transport(sender)} -> {transport(j)}"
                by_path.setdefault(path, []).append(latency[key])
    intended_keys = (
        {(ident, j) for ident, v in sent.items() for j in (v[1] or [j for j in alive if j != v[0]])}
        if args.mode == "relay"
        else None
    )
    if intended_keys is not None:
        misrouted = sum(1 for key in deliveries if key[0] in sent and key not in intended_keys)
    duplicates = sum(c - 1 for c in deliveries.values() if c > 1)
    lats.sort()
    ack_lats = sorted(v[4] for v in acked.values() if v[4] is not None)
    rtts = sorted(x for r in results for x in r["rtts"])
    state_events: Counter[str] = Counter()
    for r in results:
        state_events.update(r["state_events"])
    connect_ms = sorted(x for r in results for x in r["connect_ms"])

    server = sampler.of("server")
    base = [s for s in server if s[0] < t_clients]
    window = sampler.of("server", t0, t1)
    mean_cpu, max_cpu = cpu_stats(window)
    server_rss_window = [s[2] for s in window]
    clients_cpu = {
        name: cpu_stats(sampler.of(name, t0, t1))[0]
        for name in sorted(sampler.pids)
        if name != "server"
    }
    clients_rss = {
        name: round(max((s[2] for s in sampler.of(name)), default=0) / 1024, 1)
        for name in sorted(sampler.pids)
        if name != "server"
    }
    # Machine-wide CPU (in % of one core) and what other processes took meanwhile.
    ncpu = os.cpu_count() or 1
    machine = [m for m in sampler.machine if t0 <= m[0] <= t1]
    machine_pct = others_pct = None
    if len(machine) >= 2:
        (_, ba, ta), (_, bb, tb) = machine[0], machine[-1]
        machine_pct = 100.0 * ncpu * (bb - ba) / max(1, tb - ta)
        ours = [cpu_stats(sampler.of(name, t0, t1))[0] for name in [*sampler.pids, "orchestrator"]]
        others_pct = max(0.0, machine_pct - sum(x for x in ours if x is not None))
    gc_info = {"server": server_stats.pop("gc", None)} | {
        f"client{r['index']}": r["gc"] for r in results
    }
    # Long GC pauses per second of the run, per process (ms).
    gc_by_second: dict[int, dict[str, float]] = {}
    for name, info in gc_info.items():
        for t, _gen, pause_ms in (info or {}).get("over_20ms", []):
            if t0 - 1 <= t <= t1 + 1:
                slot = gc_by_second.setdefault(int(t - t0), {})
                slot[name] = round(slot.get(name, 0.0) + pause_ms, 1)
    # Per-second timeline (by send time): load, latency, server and machine CPU.
    per_second: dict[int, list[float]] = {}
    for (ident, _j), lat_value in latency.items():
        second = int(sent[ident][2] - t0)
        per_second.setdefault(second, []).append(lat_value)
    sends_per_second = Counter(int(v[2] - t0) for v in sent.values())

    def others_between(a: float, b: float) -> float | None:
        """CPU % taken by processes that are not the soak's between ``a`` and ``b``."""
        mach = [m for m in sampler.machine if a <= m[0] <= b]
        if len(mach) < 2:
            return None
        total = 100.0 * ncpu * (mach[-1][1] - mach[0][1]) / max(1, mach[-1][2] - mach[0][2])
        ours = [cpu_stats(sampler.of(name, a, b))[0] for name in [*sampler.pids, "orchestrator"]]
        return max(0.0, total - sum(x for x in ours if x is not None))

    # Server-socket UDP drops per second (each sampling interval counted at its start).
    udp_by_second: Counter[int] = Counter()
    for (ta, xa), (_tb, xb) in itertools.pairwise(sampler.udp_server_series):
        if t0 <= ta < t1:
            udp_by_second[int(ta - t0)] += xb - xa

    timeline = []
    quiet_lats: list[float] = []
    for second in range(math.ceil(t1 - t0)):
        v = sorted(per_second.get(second, []))
        srv_cpu = cpu_stats(sampler.of("server", t0 + second - 0.5, t0 + second + 1.5))[0]
        mach = [m for m in sampler.machine if t0 + second - 0.5 <= m[0] <= t0 + second + 1.5]
        mach_pct = None
        if len(mach) >= 2:
            mach_pct = 100.0 * ncpu * (mach[-1][1] - mach[0][1]) / max(1, mach[-1][2] - mach[0][2])
        # "Quiet": other processes took < 25 % of a core from this second to 2 s later.
        others = others_between(t0 + second - 0.5, t0 + second + 2.5)
        quiet = others is not None and others < QUIET_OTHERS_PCT
        if quiet:
            quiet_lats += v
        timeline.append(
            {
                "second": second,
                "sent": sends_per_second.get(second, 0),
                "p50_ms": _ms(percentile(v, 0.5)),
                "p99_ms": _ms(percentile(v, 0.99)),
                "server_cpu_pct": _round(srv_cpu),
                "machine_cpu_pct": _round(mach_pct),
                "other_processes_cpu_pct": _round(others),
                "server_udp_drops": udp_by_second.get(second, 0),
                "quiet": quiet,
                "gc_pauses_over_20ms": gc_by_second.get(second, {}),
            }
        )
    logs = {}
    for name in ["server", *sorted(sampler.pids.keys() - {"server"})]:
        w, e, ex = log_summary(tmp / f"{name}.err")
        logs[name] = {"warnings": w, "errors": e, "examples": ex}
    path_stats = {
        path: {
            "delivered": len(v),
            "p50_ms": _ms(percentile(sorted(v), 0.5)),
            "p99_ms": _ms(percentile(sorted(v), 0.99)),
        }
        for path, v in sorted(by_path.items())
    }
    return {
        "config": {
            "mode": args.mode,
            "connections": n,
            "quic": quic_count,
            "ws": n - quic_count,
            "procs": args.procs,
            "seconds": args.seconds,
            "rate": args.rate,
            "fanout": args.fanout if args.mode == "relay" else "all",
            "size": args.size,
            "payload_mean_bytes": round(
                sum(r.get("payload_bytes", 0) for r in results) / max(1, len(sent))
            ),
            "heartbeat_s": args.heartbeat,
            "format": args.format,
            "python": sys.version.split()[0],
            "start_unix": round(t0, 3),
        },
        "connections": {
            "connected": n - len(failed),
            "failed": len(failed),
            "ramp_s": round(max(r["ramp_s"] for r in ready.values()), 1),
            "connect_p50_ms": _round(percentile(connect_ms, 0.5)),
            "connect_p99_ms": _round(percentile(connect_ms, 0.99)),
            "state_events": dict(state_events),
        },
        "messages": {
            "sent": len(sent),
            "acked": len(acked),
            "failed": dict(fail_reasons),
            "achieved_rate": round(len(sent) / args.seconds, 1),
        },
        "deliveries": {
            "expected": expected,
            "delivered": expected - lost,
            "delivered_total": len(latency),
            "lost": lost,
            "lost_examples": lost_examples,
            "delivered_but_unacked": delivered_unacked,
            "duplicates": duplicates,
            "misrouted": misrouted,
            "unknown_ids": unknown,
        },
        "latency_ms": {
            "p50": _ms(percentile(lats, 0.5)),
            "p99": _ms(percentile(lats, 0.99)),
            "max": _ms(lats[-1] if lats else None),
            "by_path": path_stats,
            "quiet_seconds": sum(1 for t in timeline if t["quiet"]),
            "quiet_delivered": len(quiet_lats),
            "quiet_p50": _ms(percentile(sorted(quiet_lats), 0.5)),
            "quiet_p99": _ms(percentile(sorted(quiet_lats), 0.99)),
            "quiet_max": _ms(max(quiet_lats, default=None)),
            "quiet_server_udp_drops": sum(t["server_udp_drops"] for t in timeline if t["quiet"]),
            "ack_p50": _ms(percentile(ack_lats, 0.5)),
            "ack_p99": _ms(percentile(ack_lats, 0.99)),
        },
        "heartbeats": {
            "round_trips_seen": len(rtts),
            "connections_with_pong": sum(r["pong_clients"] for r in results),
            "rtt_p50_ms": _ms(percentile(rtts, 0.5)),
            "rtt_p99_ms": _ms(percentile(rtts, 0.99)),
        },
        "server": {
            "rss_baseline_mib": round(base[-1][2] / 1024, 1) if base else None,
            "rss_window_start_mib": round(server_rss_window[0] / 1024, 1)
            if server_rss_window
            else None,
            "rss_window_end_mib": round(server_rss_window[-1] / 1024, 1)
            if server_rss_window
            else None,
            "rss_peak_mib": round(sampler.hwm.get("server", 0) / 1024, 1),
            "cpu_mean_pct": None if mean_cpu is None else round(mean_cpu, 1),
            "cpu_max_1s_pct": None if max_cpu is None else round(max_cpu, 1),
            "fds_peak": max((s[3] for s in server), default=None),
            "stats": server_stats,
        },
        "machine": {
            "cpus": ncpu,
            "cpu_pct": _round(machine_pct),
            "other_processes_cpu_pct": _round(others_pct),
            "load_average": Path("/proc/loadavg").read_text().split()[:3],
        },
        "gc": gc_info,
        "timeline": timeline,
        "clients": {
            "cpu_mean_pct": {k: None if v is None else round(v, 1) for k, v in clients_cpu.items()},
            "rss_peak_mib": clients_rss,
        },
        "logs": logs,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}{unit}" if abs(value) < 10 else f"{value:,.1f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def print_report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    c, con, m, d, lat = (
        r["config"],
        r["connections"],
        r["messages"],
        r["deliveries"],
        r["latency_ms"],
    )
    hb, srv, cl = r["heartbeats"], r["server"], r["clients"]
    model = f"relay, fanout {c['fanout']}" if c["mode"] == "relay" else "chat room (broadcast)"
    print(
        f"flare soak: {c['connections']:,} connections ({c['ws']:,} WS + {c['quic']:,} QUIC), "
        f"{c['procs']} client process{'es' if c['procs'] != 1 else ''}, "
        f"{c['seconds']:g} s at {c['rate']:g} SEND/s, {model}, "
        f"payload {c.get('payload_mean_bytes') or c['size']} bytes, format {c['format']}, "
        f"PING every {c['heartbeat_s']:g} s, "
        f"Python {c['python']}, flare {c.get('flare_code', '?')}"
    )
    events = ", ".join(f"{k} {v}" for k, v in sorted(con["state_events"].items())) or "none"
    rows: list[tuple[str, str]] = [
        (
            "connections up",
            f"{con['connected']:,} / {c['connections']:,} "
            f"(ramp {con['ramp_s']:g} s; connect p50 / p99 "
            f"{_fmt(con['connect_p50_ms'])} / {_fmt(con['connect_p99_ms'])} ms)",
        ),
        ("connection events", events),
        ("SENDs sent", f"{m['sent']:,} ({m['achieved_rate']:g}/s)"),
        ("SENDs ACKed", f"{m['acked']:,}"),
        ("SENDs failed", ", ".join(f"{k}: {v}" for k, v in m["failed"].items()) or "0"),
        ("deliveries expected", f"{d['expected']:,} (ACKed SEND x intended receiver)"),
        ("delivered (of expected)", f"{d['delivered']:,}"),
        ("lost (goal 0)", f"{d['lost']:,}"),
        (
            "delivered, SEND not ACKed",
            f"{d['delivered_but_unacked']:,} (not counted above)",
        ),
        ("duplicates / misrouted", f"{d['duplicates']:,} / {d['misrouted']:,}"),
        (
            "delivery latency p50 / p99 / max",
            f"{_fmt(lat['p50'])} / {_fmt(lat['p99'])} / {_fmt(lat['max'])} ms",
        ),
    ]
    rows.append(
        (
            "  in quiet seconds",
            f"{_fmt(lat['quiet_p50'])} / {_fmt(lat['quiet_p99'])} / {_fmt(lat['quiet_max'])} ms "
            f"({lat['quiet_delivered']:,} deliveries sent in {lat['quiet_seconds']} of "
            f"{math.ceil(c['seconds'])} s when other processes took < {QUIET_OTHERS_PCT:g} % CPU;"
            f" server UDP drops in them: {lat['quiet_server_udp_drops']:,})",
        )
    )
    for path, s in lat["by_path"].items():
        rows.append(
            (f"  {path}", f"{_fmt(s['p50_ms'])} / {_fmt(s['p99_ms'])} ms ({s['delivered']:,})")
        )
    rows += [
        ("ACK latency p50 / p99", f"{_fmt(lat['ack_p50'])} / {_fmt(lat['ack_p99'])} ms"),
        (
            "heartbeat round trips",
            f"{hb['round_trips_seen']:,} seen, on "
            f"{hb['connections_with_pong']:,} connections; RTT p50 / p99 "
            f"{_fmt(hb['rtt_p50_ms'])} / {_fmt(hb['rtt_p99_ms'])} ms",
        ),
        (
            "server RSS",
            f"{_fmt(srv['rss_baseline_mib'])} MiB idle -> "
            f"{_fmt(srv['rss_window_start_mib'])} at start -> "
            f"{_fmt(srv['rss_window_end_mib'])} at end, peak {_fmt(srv['rss_peak_mib'])} MiB",
        ),
        (
            "server CPU",
            f"mean {_fmt(srv['cpu_mean_pct'])} %, busiest second "
            f"{_fmt(srv['cpu_max_1s_pct'])} % (100 % = one core)",
        ),
        ("server fds (peak)", _fmt(srv["fds_peak"])),
    ]
    if srv["stats"]:
        s = srv["stats"]
        rows.append(("server counters", ", ".join(f"{k} {v}" for k, v in sorted(s.items()))))
    mach = r["machine"]
    rows.append(
        (
            "machine CPU (all processes)",
            f"{_fmt(mach['cpu_pct'])} % of {mach['cpus'] * 100} %, of which "
            f"{_fmt(mach['other_processes_cpu_pct'])} % not the soak's",
        )
    )
    worst = sorted(
        (t for t in r["timeline"] if t["p99_ms"] is not None), key=lambda t: -t["p99_ms"]
    )[:3]
    rows.append(
        (
            "worst seconds (p99)",
            "; ".join(
                f"t={t['second']} s: {_fmt(t['p99_ms'])} ms (server {_fmt(t['server_cpu_pct'])} %,"
                f" machine {_fmt(t['machine_cpu_pct'])} %"
                + "".join(f", GC {k} {v:g} ms" for k, v in t["gc_pauses_over_20ms"].items())
                + ")"
                for t in worst
            ),
        )
    )
    for name, info in r["gc"].items():
        if info:
            rows.append(
                (
                    f"GC pauses {name}",
                    f"{'/'.join(map(str, info['collections']))} collections (gen 0/1/2), "
                    f"longest {info['longest_ms']} ms, {len(info['over_20ms'])} over 20 ms",
                )
            )
    rows.append(
        (
            "client processes CPU",
            ", ".join(f"{k} {_fmt(v)} %" for k, v in cl["cpu_mean_pct"].items()),
        )
    )
    rows.append(
        (
            "client processes RSS peak",
            ", ".join(f"{k} {_fmt(v)} MiB" for k, v in cl["rss_peak_mib"].items()),
        )
    )
    if r.get("udp"):
        u = r["udp"]
        rows.append(
            (
                "UDP (machine-wide, run)",
                f"{u.get('InDatagrams', 0):,} datagrams in, "
                f"{u.get('RcvbufErrors', 0):,} dropped (receive buffer full); QUIC sockets: "
                f"server {u['drops_by_socket_side']['server']:,}, "
                f"clients {u['drops_by_socket_side']['clients']:,} dropped",
            )
        )
    for name, info in r["logs"].items():
        rows.append((f"log {name}", f"{info['warnings']} warnings, {info['errors']} errors"))
        for ex in info["examples"]:
            rows.append(("", f"  {ex}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


# -- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="400 connections, 20 s")
    p.add_argument("--connections", type=int, help="default 2000 (--quick: 400)")
    p.add_argument("--quic-share", type=float, default=0.25, help="fraction over QUIC")
    p.add_argument("--seconds", type=float, help="traffic duration (default 60; --quick: 20)")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="SENDs per second in total (default 200; chat mode 1)",
    )
    p.add_argument("--fanout", type=int, default=1, help="receivers per SEND (relay mode)")
    p.add_argument(
        "--size", type=int, default=128, help="payload size (approximate: JSON id + stamp + pad)"
    )
    p.add_argument("--heartbeat", type=float, default=5.0, help="client PING interval, s")
    p.add_argument("--ack-timeout", type=float, default=10.0)
    p.add_argument("--grace", type=float, default=5.0, help="receive time after the last ACK")
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--format", choices=("mix", "protobuf", "json"), default="mix")
    p.add_argument("--mode", choices=("relay", "chat"), default="relay")
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=32,
        help="handshakes in flight per client process",
    )
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--ramp-timeout", type=float, default=240.0)
    p.add_argument("--max-connections", type=int, default=10_000, help="hub limit (relay)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep the children's stderr")
    # Internal (children).
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ws-addr", help=argparse.SUPPRESS)
    p.add_argument("--quic-addr", help=argparse.SUPPRESS)
    p.add_argument("--results", help=argparse.SUPPRESS)
    p.add_argument("--max-life", type=float, default=600.0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.connections is None:
        args.connections = 400 if args.quick else 2000
    if args.seconds is None:
        args.seconds = 20.0 if args.quick else 60.0
    if args.rate is None:
        args.rate = 1.0 if args.mode == "chat" else 200.0
    if args.role == "server":
        run_child(args, server_role)
    elif args.role == "client":
        run_child(args, client_role)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
