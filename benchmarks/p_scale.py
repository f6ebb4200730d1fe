"""P7/P8: server memory per idle connection, and 10,000 idle connections with heartbeats.

Everything runs on 127.0.0.1 in separate processes (``benchmarks/p_scale_roles.py``),
steered with signals; this process only reads ``/proc`` and signals.

* **P7** — server RSS per idle, *negotiated* WebSocket connection. One repeat of one side:
  start the server, open and close ``WARMUP`` connections (so one-time costs such as lazy
  imports and first-use caches are not spread over the connections), ``gc.collect()`` in
  the server, read its RSS; open ``P7_CONNECTIONS`` (2,000) connections from one client
  process, wait ``SETTLE`` seconds, ``gc.collect()`` again, read the RSS again and check
  that all of them are live on the server. Per connection = (after − before) / 2,000.

  - flare: a :class:`~flare_drivers.Hub` with its default config on one WS listener;
    :class:`~flare_drivers.Client` connections (Protobuf, one user id each, 30 s
    heartbeat), each complete with CONNECT → CONNECT_ACK.
  - peer: a ``websockets`` server with permessage-deflate off (flare's WebSocket has no
    compression extension, so this is like for like) and otherwise the library's defaults
    (20 s keepalive pings), whose handler reads until the peer closes; ``websockets``
    client connections, also without compression. In full mode ``websockets`` with its
    defaults (permessage-deflate negotiated: zlib state per connection) is measured too,
    for information (``extra``: ``peer_defaults_kib``, ``ratio_vs_peer_defaults``).

  Repeats are interleaved (flare first on even repeats, the peer first on odd ones); the
  row is :func:`_common.cost_row` (median of the per-repeat ratios; goal ≤ 1.2).

* **P8** — 10,000 negotiated flare WS connections (Protobuf, 30 s heartbeat: the default
  interval) from ``P8_PROCS`` client processes of 5,000, at most ``CONCURRENCY``
  handshakes in flight each, against one default :class:`~flare_drivers.Hub` process.
  Once every client process reports its connections up (and a short settle), the hold
  window starts: 32 s in quick mode, 62 s in full mode, so every connection sends at
  least one PING in it (two in full mode). At its start the server runs ``gc.collect()``
  (the ramp-up leaves a full collection due, ~1 s of CPU at this size: a cost of
  connecting, not of holding; the collector's runs inside the window are reported),
  remembers its live connection ids and restarts an inbound message counter; the
  clients remember their heartbeat RTTs. At the end: *held* = connections live on the
  server at both ends of the window (a reconnect would get a new id), capped by the
  clients' own count of connected clients; the PINGs the server received in the window
  and the clients that saw a new PONG prove the heartbeat ran; the server's CPU % of one
  core over the window (``/proc`` utime + stime, split in ``extra``) is the row's value
  (goal ≤ 2 %). The client processes' CPU is reported for information.

    .venv/bin/python benchmarks/p_scale.py            # 3 repeats of P7, 62 s hold for P8
    .venv/bin/python benchmarks/p_scale.py --quick    # 2 repeats of P7, 32 s hold for P8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from _common import Child, Row, cost_row, cpu_seconds, cpu_split, rss_bytes

ROLES = str(Path(__file__).resolve().parent / "p_scale_roles.py")
MARK = signal.SIGUSR2
REPORT = signal.SIGUSR1

P7_CONNECTIONS = 2000
WARMUP = 20
"""Connections opened and closed before the baseline RSS (both sides)."""
SETTLE = 0.5
"""Seconds between the last connection up and the memory reading."""
CONCURRENCY = 200
"""Handshakes in flight per client process."""
P8_CONNECTIONS = 10_000
P8_PROCS = 2
HEARTBEAT = 30.0
"""flare client PING interval in P8 (and P7), seconds: the default."""
MAX_LIFE = 400.0
"""Hard bound on any child's life, seconds."""


class Proc:
    """A :class:`_common.Child` whose JSON lines are read by a thread, so every wait for
    a line has a real deadline (``Child.line`` blocks while the child prints nothing)."""

    def __init__(self, stack: contextlib.ExitStack, name: str, args: Sequence[str]) -> None:
        self.name = name
        self.child = stack.enter_context(Child([ROLES, *args, "--max-life", str(MAX_LIFE)]))
        self.pid = self.child.pid
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        proc = self.child.proc
        assert proc is not None and proc.stdout is not None
        for text in proc.stdout:
            text = text.strip()
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    self._lines.put(json.loads(text))
        self._lines.put(None)  # end of output: the child exited

    def wait_for(self, key: str, timeout: float) -> dict[str, Any]:
        """The next line holding ``key`` (earlier lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {key!r} line within {timeout:g} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name} exited before its {key!r} line")
            if key in line:
                return line

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def ask(self, signum: int, key: str, timeout: float = 30.0) -> dict[str, Any]:
        """Send ``signum`` and return the answer line holding ``key``."""
        self.signal(signum)
        return self.wait_for(key, timeout)


# -- P7 -------------------------------------------------------------------------------------


def p7_sample(side: str, *, compression: bool = True) -> dict[str, Any]:
    """One repeat of one side (``flare`` or ``websockets``): KiB of server RSS per
    connection, plus the readings it came from."""
    server_role, client_role = (
        ("flare-server", "flare-clients") if side == "flare" else ("ws-server", "ws-clients")
    )
    extra = [] if compression else ["--no-compression"]
    with contextlib.ExitStack() as stack:
        server = Proc(stack, f"{side} server", [server_role, *extra])
        address = server.wait_for("address", 30)["address"]
        clients = Proc(
            stack,
            f"{side} clients",
            [
                client_role,
                "--url",
                f"ws://{address}",
                "--count",
                str(P7_CONNECTIONS),
                "--warmup",
                str(WARMUP),
                "--concurrency",
                str(CONCURRENCY),
                "--heartbeat",
                str(HEARTBEAT),
                *extra,
            ],
        )
        clients.wait_for("warmed", 60)
        time.sleep(0.3)  # let the warm-up connections' server tasks finish
        base_stats = server.ask(REPORT, "stats")
        before = rss_bytes(server.pid)
        clients.signal(MARK)  # go
        ready = clients.wait_for("ready", 120)
        time.sleep(SETTLE)
        stats = server.ask(REPORT, "stats")
        after = rss_bytes(server.pid)
        # Server first: killed clients would make the server log every lost connection.
        server.child.stop()
    if base_stats["live"] != 0 or stats["live"] != P7_CONNECTIONS:
        raise RuntimeError(
            f"P7 {side}: {stats['live']} live connections on the server "
            f"(expected {P7_CONNECTIONS}; {base_stats['live']} before; clients: {ready})"
        )
    return {
        "kib_per_conn": (after - before) / 1024 / P7_CONNECTIONS,
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
        "tasks_per_conn": (stats["tasks"] - base_stats["tasks"]) / P7_CONNECTIONS,
        "ramp_s": ready["ramp_s"],
    }


def measure_p7(quick: bool) -> Row:
    """P7 row: flare vs ``websockets`` without compression (interleaved repeats, median
    of the per-repeat ratios); in full mode ``websockets`` with its defaults as well."""
    repeats = 2 if quick else 3
    flare: list[dict[str, Any]] = []
    peer: list[dict[str, Any]] = []
    deflate: list[dict[str, Any]] = []
    for r in range(repeats):
        order = ("flare", "websockets") if r % 2 == 0 else ("websockets", "flare")
        for side in order:
            if side == "flare":
                flare.append(p7_sample("flare"))
            else:
                peer.append(p7_sample("websockets", compression=False))
        if not quick:
            deflate.append(p7_sample("websockets", compression=True))
    f_kib = [s["kib_per_conn"] for s in flare]
    p_kib = [s["kib_per_conn"] for s in peer]
    row = cost_row(
        "P7",
        f"server RSS per idle negotiated WS connection ({P7_CONNECTIONS:,} connections)",
        "websockets (no compression)",
        f_kib,
        p_kib,
        "KiB/conn",
        1.2,
        note=f"RSS deltas after gc.collect(), {WARMUP} warm-up connections first",
    )
    row.extra.update(
        {
            "flare_samples_kib": [round(x, 2) for x in f_kib],
            "peer_samples_kib": [round(x, 2) for x in p_kib],
            "flare_tasks_per_conn": flare[0]["tasks_per_conn"],
            "peer_tasks_per_conn": peer[0]["tasks_per_conn"],
            "flare_rss_before_mib": round(statistics.median(s["rss_before_mib"] for s in flare), 1),
            "peer_rss_before_mib": round(statistics.median(s["rss_before_mib"] for s in peer), 1),
        }
    )
    if deflate:
        # websockets offers permessage-deflate by default: zlib state on every connection
        # (flare's WebSocket has no compression extension, so this is not like for like).
        d_kib = statistics.median(s["kib_per_conn"] for s in deflate)
        row.extra["peer_defaults_kib"] = round(d_kib, 2)
        row.extra["ratio_vs_peer_defaults"] = round(row.flare / d_kib, 3)
    return row


# -- P8 -------------------------------------------------------------------------------------


def measure_p8(
    quick: bool, *, heartbeat: float = HEARTBEAT, server_args: Sequence[str] = ()
) -> Row:
    """P8 row: 10,000 connections held through a heartbeat round; server CPU %.
    ``heartbeat`` and ``server_args`` (e.g. ``--profile FILE``) are for investigations."""
    hold = 32.0 if quick else 62.0
    per_proc = [P8_CONNECTIONS // P8_PROCS] * P8_PROCS
    per_proc[-1] += P8_CONNECTIONS - sum(per_proc)
    with contextlib.ExitStack() as stack:
        server = Proc(stack, "P8 server", ["flare-server", "--count-messages", *server_args])
        address = server.wait_for("address", 30)["address"]
        t_setup = time.monotonic()
        fleets = [
            Proc(
                stack,
                f"P8 clients {i}",
                [
                    "flare-clients",
                    "--url",
                    f"ws://{address}",
                    "--count",
                    str(n),
                    "--concurrency",
                    str(CONCURRENCY),
                    "--heartbeat",
                    str(heartbeat),
                    "--prefix",
                    f"p{i}u",
                ],
            )
            for i, n in enumerate(per_proc)
        ]
        ready = [f.wait_for("ready", 180) for f in fleets]
        setup_s = time.monotonic() - t_setup
        time.sleep(SETTLE)
        marked = server.ask(MARK, "marked")
        for f in fleets:
            f.ask(MARK, "marked")
        t0 = time.monotonic()
        cpu0 = cpu_seconds(server.pid)
        split0 = cpu_split(server.pid)
        ccpu0 = [cpu_seconds(f.pid) for f in fleets]
        time.sleep(hold)
        t1 = time.monotonic()
        cpu1 = cpu_seconds(server.pid)
        split1 = cpu_split(server.pid)
        ccpu1 = [cpu_seconds(f.pid) for f in fleets]
        window = t1 - t0
        status = [f.ask(REPORT, "status") for f in fleets]
        stats = server.ask(REPORT, "stats")
        rss = rss_bytes(server.pid)
        server.child.stop()
    cpu_percent = 100.0 * (cpu1 - cpu0) / window
    client_cpu = [100.0 * (b - a) / window for a, b in zip(ccpu0, ccpu1, strict=True)]
    clients_up = sum(s["connected"] for s in status)
    held = min(stats["held"], clients_up)
    all_held = held == P8_CONNECTIONS and stats["disconnects"] == 0
    pongs = sum(s["new_rtt"] for s in status)
    note = "all held" if all_held else f"NOT all held ({held:,} of {P8_CONNECTIONS:,})"
    note += f"; {stats['messages_since_mark']:,} PINGs in a {window:.0f} s window"
    return Row(
        "P8",
        f"server CPU, {P8_CONNECTIONS:,} idle WS connections, {heartbeat:g} s heartbeat",
        "none",
        cpu_percent,
        None,
        "% of a core",
        cpu_percent,
        2.0,
        at_least=False,
        note=note,
        extra={
            "held": held,
            "cpu_percent": round(cpu_percent, 2),
            "cpu_user_sys_percent": [
                round(100.0 * (b - a) / window, 2) for a, b in zip(split0, split1, strict=True)
            ],
            "window_s": round(window, 1),
            "live_at_mark": marked["live"],
            "pings_in_window": stats["messages_since_mark"],
            "clients_with_new_pong": pongs,
            "server_accepted_total": stats["accepted_total"],
            "server_disconnects": stats["disconnects"],
            "client_cpu_percent": [round(c, 2) for c in client_cpu],
            "client_failed": sum(r["failed"] for r in ready),
            "setup_s": round(setup_s, 1),
            "server_rss_mib": round(rss / 2**20, 1),
            "server_tasks": stats["tasks"],
            "server_gc_in_window": stats["gc_since_mark"],
            "server_gc_seconds_in_window": stats["gc_seconds_since_mark"],
            "server_gc_longest_ms": stats["gc_longest_ms"],
        },
    )


# -- entry points ---------------------------------------------------------------------------


def measure(quick: bool) -> list[Row]:
    """P7 and P8 rows (``--quick``: 2 P7 repeats and a 32 s P8 hold window)."""
    return [measure_p7(quick), measure_p8(quick)]


def _print(rows: Iterator[Row] | list[Row]) -> None:
    for row in rows:
        peer = "-" if row.peer is None else f"{row.peer:.2f}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
        print(
            f"{row.id:4s} {row.measure}\n     flare {row.flare:.2f} {row.unit}, "
            f"{row.peer_name} {peer}, ratio {ratio} (goal {'>=' if row.at_least else '<='} "
            f"{row.goal:g}) {'met' if row.met else 'MISSED'}; {row.note}"
        )
        print("     " + json.dumps(row.to_json()))


def main(argv: Sequence[str] | None = None) -> None:
    """``python benchmarks/p_scale.py [--quick] [--only P7|P8]``: print the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=("P7", "P8"))
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT, help="P8 PING interval")
    p.add_argument("--profile", metavar="FILE", help="cProfile the P8 server's hold window")
    args = p.parse_args(argv)
    server_args = ["--profile", os.path.abspath(args.profile)] if args.profile else []
    t0 = time.monotonic()
    if args.only == "P7":
        rows = [measure_p7(args.quick)]
    elif args.only == "P8":
        rows = [measure_p8(args.quick, heartbeat=args.heartbeat, server_args=server_args)]
    else:
        rows = [
            measure_p7(args.quick),
            measure_p8(args.quick, heartbeat=args.heartbeat, server_args=server_args),
        ]
    _print(rows)
    print(f"({time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
