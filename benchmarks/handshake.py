"""Handshake latency: from "connect" to CONNECT_ACK processed, per transport.

Only the handshake is timed (the clean close that follows is not).

Starts ``flare serve`` in a separate process on loopback (ws, wss with a throwaway test CA,
quic), then times ``Client(...)`` until ``wait_connected()`` returns, N times each, for:
WS, WSS, QUIC, raced QUIC+WS (Happy Eyeballs, both up) and, as the floor, a bare TCP +
WebSocket upgrade without any flare protocol. Prints medians and p90 in milliseconds.

    .venv/bin/python benchmarks/handshake.py           # 40 handshakes per row
    .venv/bin/python benchmarks/handshake.py --quick   # 10 per row
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from flare_drivers import Client, connect_websocket
from flare_drivers._tls import LocalCA


async def timed(n: int, attempt: Callable[[], Awaitable[float]]) -> list[float]:
    return [await attempt() for _ in range(n)]


async def main(n: int) -> None:
    ca = LocalCA.create()
    leaf = ca.issue()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(leaf.cert_pem)
        key.write_bytes(leaf.key_pem)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flare_drivers",
                "serve",
                "--ws",
                "127.0.0.1:0",
                "--wss",
                "127.0.0.1:0",
                "--quic",
                "127.0.0.1:0",
                "--cert",
                str(cert),
                "--key",
                str(key),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            bound = json.loads(server.stdout.readline())
            context = ssl.create_default_context(cadata=ca.cert_pem.decode())
            ws, wss, quic = (
                f"ws://{bound['ws']}",
                f"wss://{bound['wss']}",
                f"quic://{bound['quic']}",
            )

            def flare(urls: list[str]) -> Callable[[], Awaitable[float]]:
                async def attempt() -> float:
                    start = time.perf_counter()
                    client = Client(urls, ssl_context=context, quic_verify=ca.cert_pem.decode())
                    async with client:
                        await client.wait_connected()
                        # Only the handshake is timed; the clean close is not.
                        return (time.perf_counter() - start) * 1000

                return attempt

            async def bare_ws() -> float:
                start = time.perf_counter()
                transport = await connect_websocket(ws)
                elapsed = (time.perf_counter() - start) * 1000
                await transport.aclose(None, "")
                return elapsed

            rows = [
                ("TCP + WebSocket upgrade only", bare_ws),
                ("WS  (flare CONNECT -> ACK)", flare([ws])),
                ("WSS (flare CONNECT -> ACK)", flare([wss])),
                ("QUIC (flare CONNECT -> ACK)", flare([quic])),
                ("raced QUIC + WS, both up", flare([quic, ws])),
            ]
            print(
                f"Python {sys.version.split()[0]}, {n} handshakes per row, loopback, "
                "server in its own process"
            )
            print(f"{'transport':34s} {'median ms':>10s} {'p90 ms':>8s}")
            for name, attempt in rows:
                await attempt()  # warm-up
                samples = sorted(await timed(n, attempt))
                p90 = samples[int(0.9 * (len(samples) - 1))]
                print(f"{name:34s} {statistics.median(samples):10.2f} {p90:8.2f}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    anyio.run(main, 10 if args.quick else 40)
