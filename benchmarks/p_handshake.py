"""P5: CONNECT → CONNECT_ACK on loopback WebSocket against the TCP + WebSocket upgrade alone.

``flare serve`` runs in its own process (WS on 127.0.0.1, default config). This process
times, alternately, one by one:

* flare (the row): the protocol handshake on flare's stack — ``connect_websocket`` (TCP
  connect, WebSocket upgrade), then a :class:`~flare_proto.ClientConnection` sends CONNECT
  and reads until CONNECT_ACK is processed (``HandshakeCompleted``): what any driver built
  on the sans-IO core does;
* ``Client`` (``extra``): the same through the high-level :class:`~flare_drivers.Client`,
  from its creation until ``wait_connected()`` returns — it adds its background task,
  state events and the wake-up of the waiting task, reported separately so the protocol's
  cost is not hidden behind the convenience layer's, nor the other way round;
* peer: the TCP connect and WebSocket upgrade alone (``connect_websocket``), against the
  same server, with no flare protocol.

Only the handshake is timed; the close that follows is not. Each repeat is the median of
``per_repeat`` handshakes of each kind, and the ratio is the median of the per-repeat
ratios flare / peer (goal ≤ 1.5).

    .venv/bin/python benchmarks/p_handshake.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import anyio
from _common import Child, Row, cost_row

from flare_drivers import Client, connect_websocket
from flare_drivers._clock import now, process_ids
from flare_drivers._transport import TransportClosed
from flare_proto import ClientConfig, ClientConnection, HandshakeCompleted

CONFIG = ClientConfig()
IDS = process_ids()


async def _flare(url: str) -> float:
    start = time.perf_counter()
    async with Client([url]) as client:
        await client.wait_connected()
        elapsed = time.perf_counter() - start
    return elapsed * 1000


async def _core(url: str) -> float:
    start = time.perf_counter()
    transport = await connect_websocket(url)
    core = ClientConnection(CONFIG, ids=IDS, framing=transport.framing)
    core.connect(now())
    await transport.send(core.data_to_send())
    done = False
    while not done and not core.closed:
        item = await transport.receive()
        if isinstance(item, TransportClosed):
            raise RuntimeError(f"server closed during the handshake: {item}")
        core.receive_message(item, now())
        done = any(type(e) is HandshakeCompleted for e in core.events_received())
    elapsed = time.perf_counter() - start
    if not done:
        raise RuntimeError(f"handshake failed: {core.close_code}")
    core.close(now())
    with contextlib.suppress(anyio.BrokenResourceError):
        await transport.send(core.data_to_send())
    await transport.aclose(None, "")
    return elapsed * 1000


async def _bare(url: str) -> float:
    start = time.perf_counter()
    transport = await connect_websocket(url)
    elapsed = time.perf_counter() - start
    await transport.aclose(None, "")
    return elapsed * 1000


async def _measure(
    url: str, repeats: int, per_repeat: int
) -> tuple[list[float], list[float], list[float]]:
    kinds = (_core, _flare, _bare)
    for _ in range(5):  # warm-up: imports, caches, the server's first connections
        for kind in kinds:
            await kind(url)
    samples: list[list[float]] = [[], [], []]
    for _ in range(repeats):
        these: list[list[float]] = [[], [], []]
        for _ in range(per_repeat):
            for index, kind in enumerate(kinds):
                these[index].append(await kind(url))
        for index in range(3):
            samples[index].append(statistics.median(these[index]))
    return samples[0], samples[1], samples[2]


def measure(quick: bool) -> list[Row]:
    """P5, ms per handshake (medians)."""
    repeats, per_repeat = (5, 20) if quick else (9, 40)
    serve = ["-m", "flare_drivers", "serve", "--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0"]
    with Child(serve, quiet=True) as server:
        bound = server.line()
        url = f"ws://{bound['ws']}"
        core, client, peer = anyio.run(_measure, url, repeats, per_repeat)
    row = cost_row(
        "P5",
        "CONNECT → CONNECT_ACK on loopback WS",
        "TCP + WebSocket upgrade alone",
        core,
        peer,
        "ms",
        1.5,
        note="flare = transport + client core; the Client API end to end in extra",
    )
    client_ratio = statistics.median(c / p for c, p in zip(client, peer, strict=True))
    row.extra.update(
        client_ms=round(statistics.median(client), 4), client_ratio=round(client_ratio, 3)
    )
    return [row]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in measure(parser.parse_args().quick):
        print(row)
    sys.exit(0)
