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
  same server, with no flare protocol;
* floor (``extra``): the peer plus one WebSocket Ping → Pong round trip on an upgraded
  connection (answered by wsproto, no flare code): what any protocol with one request and
  one answer after the upgrade must cost at least. CONNECT → CONNECT_ACK is such a round
  trip, so ``floor_ratio`` is the best ratio any handshake can reach here.

Only the handshake is timed; the close that follows is not, and each handshake starts
2 ms after the previous one ended, so the server has finished closing it (back to back,
a handshake overlapped the server's teardown of the one before — flare's close does
more, a CLOSE frame first — and each measured its neighbour's cost too). Each repeat is
the median of ``per_repeat`` handshakes of each kind, and the ratio is the median of the
per-repeat ratios flare / peer (goal ≤ 1.5).

    .venv/bin/python benchmarks/p_handshake.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import anyio
from _common import Child, Row, cost_row, paired_ratio
from wsproto.events import Ping, Pong

from flare_drivers import Client, connect_websocket
from flare_drivers._clock import now, process_ids
from flare_drivers._transport import TransportClosed
from flare_proto import ClientConfig, ClientConnection, Format, HandshakeCompleted

_SETTLE = 0.002
CONFIG = ClientConfig(format=Format.PROTOBUF)  # as P3, P6-P8
JSON_CONFIG = ClientConfig()  # v0.1.2's default: JSON
IDS = process_ids()


async def _core_json(url: str) -> float:
    return await _core(url, JSON_CONFIG)


async def _flare(url: str) -> float:
    start = time.perf_counter()
    async with Client([url], CONFIG) as client:
        await client.wait_connected()
        elapsed = time.perf_counter() - start
    return elapsed * 1000


async def _core(url: str, config: ClientConfig = CONFIG) -> float:
    start = time.perf_counter()
    transport = await connect_websocket(url)
    core = ClientConnection(config, ids=IDS, framing=transport.framing)
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


async def _round_trip(url: str) -> float:
    """After the upgrade, one WebSocket Ping → Pong (answered by the server's wsproto, no
    flare protocol): the cost of any one more round trip, the floor of what CONNECT →
    CONNECT_ACK can add to the upgrade."""
    transport = await connect_websocket(url)
    stream, ws = transport._stream, transport._ws  # private: a benchmark probe
    start = time.perf_counter()
    await stream.send(ws.send(Ping(b"rtt")))
    while True:
        ws.receive_data(await stream.receive())
        if any(isinstance(e, Pong) for e in ws.events()):
            break
    elapsed = time.perf_counter() - start
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
) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    kinds = (_core, _flare, _core_json, _round_trip, _bare)
    for _ in range(5):  # warm-up: imports, caches, the server's first connections
        for kind in kinds:
            await kind(url)
    samples: list[list[float]] = [[] for _ in kinds]
    for _ in range(repeats):
        these: list[list[float]] = [[] for _ in kinds]
        for _ in range(per_repeat):
            for index, kind in enumerate(kinds):
                # The server finishes closing the previous connection first, so that no
                # handshake pays for another's teardown (flare's close does more).
                await anyio.sleep(_SETTLE)
                these[index].append(await kind(url))
        for index in range(len(kinds)):
            samples[index].append(statistics.median(these[index]))
    return samples[0], samples[1], samples[2], samples[3], samples[4]


def measure(quick: bool) -> list[Row]:
    """P5, ms per handshake (medians)."""
    repeats, per_repeat = (5, 20) if quick else (9, 40)
    serve = ["-m", "flare_drivers", "serve", "--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0"]
    with Child(serve, quiet=True) as server:
        bound = server.line()
        url = f"ws://{bound['ws']}"
        core, client, json, trip, peer = anyio.run(_measure, url, repeats, per_repeat)
    row = cost_row(
        "P5",
        "CONNECT → CONNECT_ACK on loopback WS",
        "TCP + WebSocket upgrade alone",
        core,
        peer,
        "ms",
        1.5,
        note="flare = transport + client core, Protobuf; Client API and JSON in extra",
    )
    floor = [p + t for p, t in zip(peer, trip, strict=True)]  # upgrade + one round trip
    for name, values in (("client", client), ("json", json), ("floor", floor)):
        row.extra[f"{name}_ms"] = round(statistics.median(values), 4)
        row.extra[f"{name}_ratio"] = round(paired_ratio(values, peer), 3)
    row.extra["round_trip_ms"] = round(statistics.median(trip), 4)
    return [row]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in measure(parser.parse_args().quick):
        print(row)
    sys.exit(0)
