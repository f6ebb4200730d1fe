"""P5: CONNECT → CONNECT_ACK on loopback WebSocket against the TCP + WebSocket upgrade alone.

``flare serve`` runs in its own process (WS on 127.0.0.1, default config). This process
times, alternately:

* flare: ``Client([ws://...])`` from creation until ``wait_connected()`` returns — TCP
  connect, WebSocket upgrade, CONNECT out, the server's admission, CONNECT_ACK processed;
* peer: the TCP connect and WebSocket upgrade alone (flare's own wsproto transport,
  ``connect_websocket``), against the same server, with no flare protocol.

Only the handshake is timed; the close that follows is not. Each repeat is the median of
``per_repeat`` handshakes of each kind, the two kinds alternating one by one, and the ratio
is the median of the per-repeat ratios flare / peer (goal ≤ 1.5).

    .venv/bin/python benchmarks/p_handshake.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import anyio
from _common import Child, Row, cost_row

from flare_drivers import Client, connect_websocket


async def _flare(url: str) -> float:
    start = time.perf_counter()
    async with Client([url]) as client:
        await client.wait_connected()
        elapsed = time.perf_counter() - start
    return elapsed * 1000


async def _bare(url: str) -> float:
    start = time.perf_counter()
    transport = await connect_websocket(url)
    elapsed = time.perf_counter() - start
    await transport.aclose(None, "")
    return elapsed * 1000


async def _measure(url: str, repeats: int, per_repeat: int) -> tuple[list[float], list[float]]:
    for _ in range(5):  # warm-up: imports, caches, the server's first connections
        await _flare(url)
        await _bare(url)
    flare: list[float] = []
    peer: list[float] = []
    for _ in range(repeats):
        f: list[float] = []
        p: list[float] = []
        for _ in range(per_repeat):
            f.append(await _flare(url))
            p.append(await _bare(url))
        flare.append(statistics.median(f))
        peer.append(statistics.median(p))
    return flare, peer


def measure(quick: bool) -> list[Row]:
    """P5, ms per handshake (medians)."""
    repeats, per_repeat = (5, 20) if quick else (9, 40)
    serve = ["-m", "flare_drivers", "serve", "--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0"]
    with Child(serve, quiet=True) as server:
        bound = server.line()
        url = f"ws://{bound['ws']}"
        flare, peer = anyio.run(_measure, url, repeats, per_repeat)
    return [
        cost_row(
            "P5",
            "CONNECT → CONNECT_ACK on loopback WS",
            "TCP + WebSocket upgrade alone",
            flare,
            peer,
            "ms",
            1.5,
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in measure(parser.parse_args().quick):
        print(row)
    sys.exit(0)
