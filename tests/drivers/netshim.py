"""A UDP proxy on loopback that loses, delays and reorders datagrams (for QUIC fault tests).

Clients send to :attr:`UdpShim.address` instead of the server. Each client address gets
its own upstream socket connected to the target, so the server sees one peer per client.
Every datagram, in each direction, goes through :meth:`UdpShim._fate`: the first
``spare`` datagrams of a (client, direction) pass untouched (the QUIC handshake, whose
loss recovery starts at a 1 s timer and would only slow the test), then each is dropped
with probability ``loss``, or delayed by ``delay`` (so later ones overtake it) with
probability ``reorder``. Each (client, direction) has its own ``random.Random`` seeded
from ``seed``, the client's arrival order and the direction: the decision for the n-th
datagram of a flow does not depend on timing. ``blackhole`` drops everything while set
(a network that vanished). Counters in :attr:`stats`.

Run it in a task group: ``shim = UdpShim(target); address = await tg.start(shim.run)``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import anyio
import anyio.abc

Address = tuple[str, int]


@dataclass
class _Flow:
    upstream: anyio.abc.ConnectedUDPSocket
    rng_up: random.Random
    rng_down: random.Random
    count: Counter[str] = field(default_factory=Counter)
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    """anyio sockets refuse two concurrent writers (delayed datagrams go out from tasks)."""


class UdpShim:
    """Forward UDP between clients and ``target`` with seeded loss and reordering."""

    def __init__(
        self,
        target: Address,
        *,
        loss: float = 0.0,
        reorder: float = 0.0,
        delay: tuple[float, float] = (0.002, 0.02),
        spare: int = 8,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.loss = loss
        self.reorder = reorder
        self.delay = delay
        self.spare = spare
        self.seed = seed
        self.blackhole = False
        """While true every datagram, both ways, is dropped."""
        self.stats: Counter[str] = Counter()
        """``up``/``down`` + ``_forwarded``/``_dropped``/``_delayed``/``_blackholed``."""
        self._flows: dict[Address, _Flow] = {}
        self._sock: anyio.abc.UDPSocket | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock: anyio.Lock | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports ``"127.0.0.1:port"`` through ``task_status``."""
        async with (
            await anyio.create_udp_socket(local_host="127.0.0.1") as sock,
            anyio.create_task_group() as tg,
        ):
            self._sock, self._tg, self._lock = sock, tg, anyio.Lock()
            port = sock.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(f"127.0.0.1:{port}")
            try:
                async for data, client in sock:
                    flow = self._flows.get(client)
                    if flow is None:
                        flow = await self._open(client)
                    await self._pass("up", flow, data, client)
            finally:
                for flow in self._flows.values():
                    await flow.upstream.aclose()

    async def _open(self, client: Address) -> _Flow:
        assert self._tg is not None
        upstream = await anyio.create_connected_udp_socket(
            self.target[0], self.target[1], local_host="127.0.0.1"
        )
        index = len(self._flows)
        flow = _Flow(
            upstream,
            random.Random(f"{self.seed}/{index}/up"),
            random.Random(f"{self.seed}/{index}/down"),
        )
        self._flows[client] = flow
        self._tg.start_soon(self._downstream, flow, client)
        return flow

    async def _downstream(self, flow: _Flow, client: Address) -> None:
        try:
            async for data in flow.upstream:
                await self._pass("down", flow, data, client)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the server went away (ICMP) or we are closing

    async def _pass(self, direction: str, flow: _Flow, data: bytes, client: Address) -> None:
        assert self._tg is not None
        fate = self._fate(direction, flow)
        self.stats[f"{direction}_{fate}"] += 1
        if fate == "forwarded":
            # Inline, so forwarded datagrams keep their order (a task per datagram would
            # not: trio shuffles the run queue).
            await self._deliver(direction, flow, data, client, 0.0)
        elif fate == "delayed":
            rng = flow.rng_up if direction == "up" else flow.rng_down
            self._tg.start_soon(
                self._deliver, direction, flow, data, client, rng.uniform(*self.delay)
            )

    def _fate(self, direction: str, flow: _Flow) -> str:
        if self.blackhole:
            return "blackholed"
        flow.count[direction] += 1
        rng = flow.rng_up if direction == "up" else flow.rng_down
        # Always draw, so the n-th datagram's fate does not depend on the spare count.
        roll = rng.random()
        if flow.count[direction] <= self.spare:
            return "forwarded"
        if roll < self.loss:
            return "dropped"
        if roll < self.loss + self.reorder:
            return "delayed"
        return "forwarded"

    async def _deliver(
        self, direction: str, flow: _Flow, data: bytes, client: Address, wait: float
    ) -> None:
        if wait:
            await anyio.sleep(wait)
        try:
            if direction == "up":
                async with flow.lock:
                    await flow.upstream.send(data)
            else:
                assert self._sock is not None and self._lock is not None
                async with self._lock:
                    await self._sock.send((data, client))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.stats[f"{direction}_send_failed"] += 1
