"""Racing and reconnect pacing (DESIGN §5): broken transports are remembered (5 min,
doubling) and tried last, the next URL starts as soon as the previous fails, and the
reconnect delay is full jitter, uniform in [0, min(cap, base * 2**attempt)].

The clock of :mod:`flare_drivers._race` and the ``random`` of :mod:`flare_drivers._client`
are replaced where a test needs them, so nothing here sleeps to watch a penalty expire.
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import anyio
import pytest

from flare_drivers import _client, _race
from flare_drivers._client import Client, ConnectionState
from flare_drivers._hub import Connection, Hub
from flare_drivers._race import BrokenTransports, race
from flare_drivers._transport import Transport
from flare_proto import CloseCode, Framing

from .hubtools import running, url, wait_for

FAST: dict[str, Any] = {"backoff_base": 0.05, "backoff_cap": 0.2, "quic_verify": False}


class Clock:
    """A settable stand-in for ``_race.now``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock :class:`BrokenTransports` reads, frozen until a test moves it."""
    fake = Clock()
    monkeypatch.setattr(_race, "now", fake)
    return fake


def refused_url() -> str:
    """A ws:// URL on a loopback TCP port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


class DialLog(Client):
    """A :class:`Client` that records which URL each dial was for, and when it started."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dials: list[tuple[str, float]] = []

    async def _dial(self, url: str) -> Transport:
        self.dials.append((url, time.monotonic()))
        return await super()._dial(url)

    @property
    def dialled(self) -> list[str]:
        return [u for u, _ in self.dials]


# -- BrokenTransports ------------------------------------------------------------------------


def test_mark_breaks_a_url_for_five_minutes(clock: Clock) -> None:
    """A first failure keeps a URL broken for exactly the 300 s penalty, no longer."""
    broken = BrokenTransports()
    assert broken.penalty == 300.0
    assert not broken.is_broken("quic://a:1")
    broken.mark("quic://a:1")
    assert broken.is_broken("quic://a:1")
    assert not broken.is_broken("ws://b:2")  # only the URL that failed
    clock.t += 299.5
    assert broken.is_broken("quic://a:1")
    clock.t += 0.5  # the penalty is over
    assert not broken.is_broken("quic://a:1")


def test_repeated_failures_double_the_penalty(clock: Clock) -> None:
    """Each further failure doubles the span (300, 600, 1200 s), counted from that failure."""
    broken = BrokenTransports()
    spans = []
    for _ in range(3):
        start = clock.t
        broken.mark("u")
        while broken.is_broken("u"):
            clock.t += 50.0
        spans.append(clock.t - start)
        clock.t += 10.0  # it failed again a little after its penalty ended
    assert spans == [300.0, 600.0, 1200.0]
    # A failure while still broken doubles too (a broken URL is still raced, last).
    broken.mark("v")
    clock.t += 100.0
    broken.mark("v")
    clock.t += 599.0
    assert broken.is_broken("v")
    clock.t += 1.0
    assert not broken.is_broken("v")


def test_order_moves_broken_urls_last_keeping_priority(clock: Clock) -> None:
    """Broken URLs go to the end; both groups keep the caller's order (not the order of
    the failures)."""
    broken = BrokenTransports()
    urls = ["quic://a:1", "ws://b:2", "wss://c:3", "ws://d:4"]
    broken.mark("ws://d:4")
    broken.mark("ws://b:2")
    assert broken.order(urls) == ["quic://a:1", "wss://c:3", "ws://b:2", "ws://d:4"]
    assert broken.order(urls[::-1]) == ["wss://c:3", "quic://a:1", "ws://d:4", "ws://b:2"]
    assert urls == ["quic://a:1", "ws://b:2", "wss://c:3", "ws://d:4"]  # not reordered in place
    clock.t += 300.0  # both penalties over: the caller's order again
    assert broken.order(urls) == urls


def test_clear_forgets_the_failures(clock: Clock) -> None:
    """A success clears the URL: no longer broken, and its next failure starts again at
    300 s instead of doubling the old span."""
    broken = BrokenTransports()
    broken.mark("u")
    broken.mark("u")  # 600 s now
    broken.clear("u")
    assert not broken.is_broken("u")
    assert broken.order(["u", "v"]) == ["u", "v"]
    broken.mark("u")
    clock.t += 300.0
    assert not broken.is_broken("u")
    broken.clear("never-failed")  # harmless


def test_penalty_is_configurable(clock: Clock) -> None:
    """``BrokenTransports(penalty)`` sets the first span; repeats still double it."""
    broken = BrokenTransports(penalty=10.0)
    broken.mark("u")
    clock.t += 9.5
    assert broken.is_broken("u")
    broken.mark("u")  # 20 s from now
    clock.t += 19.5
    assert broken.is_broken("u")
    clock.t += 0.5
    assert not broken.is_broken("u")


# -- race() and the Client with broken transports --------------------------------------------


class FakeTransport:
    framing = Framing.MESSAGE

    def __init__(self, remote: str) -> None:
        self.remote = remote
        self.closed: list[str] = []

    async def receive(self) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(self, chunks: list[bytes]) -> None:
        pass

    async def aclose(self, number: int | None, reason: str) -> None:
        self.closed.append(reason)


@pytest.mark.anyio
async def test_race_tries_a_url_that_failed_last_time_last() -> None:
    """Two races sharing a :class:`BrokenTransports`: the dead URL listed first is dialled
    first, fails, and the live one wins; next time the live one is dialled first and wins
    before the dead one is even started."""
    dead, live = "quic://dead:1", "ws://live:2"
    dialled: list[str] = []

    async def dial(u: str) -> FakeTransport:
        dialled.append(u)
        if u == dead:
            raise ConnectionRefusedError(f"{u}: refused")
        return FakeTransport(u)

    broken = BrokenTransports()
    with anyio.fail_after(5):
        _, won = await race([dead, live], dial, stagger=0.25, broken=broken)  # type: ignore[arg-type]
        assert (won, dialled) == (live, [dead, live])
        assert broken.is_broken(dead) and not broken.is_broken(live)
        dialled.clear()
        _, won = await race([dead, live], dial, stagger=0.25, broken=broken)  # type: ignore[arg-type]
    assert (won, dialled) == (live, [live])


@pytest.mark.anyio
async def test_client_reconnect_dials_the_url_that_failed_last() -> None:
    """The Client keeps its broken-transport memory across reconnects: the refused URL it
    was given first is dialled first only once; after the server ends the connection
    (server_shutdown), the reconnect goes straight to the URL that worked (the stagger
    is 2 s, so the dead one would only start 2 s later)."""
    hub = Hub()
    connects: list[Connection] = []

    @hub.on_connect
    async def joined(conn: Connection) -> None:
        connects.append(conn)

    dead = refused_url()
    with anyio.fail_after(10):
        async with running(hub, ["ws"]) as bound:
            live = url(bound, "ws")
            client = DialLog([dead, live], race_stagger=2.0, **FAST)
            async with client:
                await client.wait_connected()
                assert client.dialled == [dead, live]
                assert client.broken.is_broken(dead)
                connects[0].close(CloseCode.SERVER_SHUTDOWN)
                await wait_for(lambda: len(connects) == 2)
                await wait_for(lambda: client.state is ConnectionState.CONNECTED)
                assert client.url == live
                assert client.dialled == [dead, live, live]


@pytest.mark.anyio
async def test_next_url_starts_as_soon_as_the_previous_fails() -> None:
    """DESIGN §5: the next attempt starts after the stagger *or as soon as the previous
    fails*. With a 5 s stagger and the first URL refused at once, the second is dialled
    well within 2 s and wins (a bound, not a measurement: refusals on loopback are
    immediate)."""
    hub = Hub()
    dead = refused_url()
    with anyio.fail_after(10):
        async with running(hub, ["ws"]) as bound:
            live = url(bound, "ws")
            client = DialLog([dead, live], race_stagger=5.0, **FAST)
            async with client:
                with anyio.fail_after(4):  # below the stagger: it did not wait for it
                    await client.wait_connected()
                assert client.url == live
                (first, t_first), (second, t_second) = client.dials
                assert (first, second) == (dead, live)
                assert t_second - t_first < 2.0
                assert client.broken.is_broken(dead)
                assert not client.broken.is_broken(live)


# -- full-jitter backoff ------------------------------------------------------------------------


class UpperBound:
    """A stand-in for ``random`` whose ``uniform`` records its range and returns one end."""

    def __init__(self, end: str = "high") -> None:
        self.end = end
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b if self.end == "high" else a


@pytest.mark.anyio  # a Client is built inside an event loop
async def test_backoff_draws_uniformly_up_to_base_times_two_to_the_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the defaults (base 0.5 s, cap 30 s) attempt n draws from [0, min(30, 0.5 * 2**n)],
    and the delay is that draw (its top end here, its bottom end 0 with another draw)."""
    stub = UpperBound()
    monkeypatch.setattr(_client, "random", stub)
    client = Client(["ws://127.0.0.1:1"])
    assert (client.backoff_base, client.backoff_cap) == (0.5, 30.0)
    delays = [client._backoff(n) for n in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert stub.calls == [(0.0, d) for d in delays]
    monkeypatch.setattr(_client, "random", UpperBound("low"))
    assert [client._backoff(n) for n in range(9)] == [0.0] * 9


@pytest.mark.anyio
async def test_backoff_seeded_draws_fill_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter, not "equal jitter": seeded draws for each attempt stay within
    [0, bound] and spread over all of it (some below 10 % of the bound, some above 90 %),
    for the defaults and for a client's own base and cap."""
    monkeypatch.setattr(_client, "random", random.Random(20240603))
    for base, cap in ((0.5, 30.0), (0.05, 0.2)):
        client = Client(["ws://127.0.0.1:1"], backoff_base=base, backoff_cap=cap)
        for attempt in range(12):
            bound = min(cap, base * 2**attempt)
            draws = [client._backoff(attempt) for _ in range(200)]
            assert all(0.0 <= d <= bound for d in draws), (attempt, bound)
            assert min(draws) < 0.1 * bound and max(draws) > 0.9 * bound, (attempt, bound)


@pytest.mark.anyio
async def test_backoff_cap_holds_for_large_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many attempts failed in a row, the delay never exceeds the cap."""
    stub = UpperBound()
    monkeypatch.setattr(_client, "random", stub)
    client = Client(["ws://127.0.0.1:1"])
    for attempt in (7, 10, 20, 50, 100, 500, 1000, 1023):
        assert client._backoff(attempt) == 30.0
    assert {b for _, b in stub.calls} == {30.0}


@pytest.mark.anyio
async def test_backoff_cap_holds_after_a_thousand_failed_attempts() -> None:
    """The attempt counter is unbounded while the server stays unreachable; the delay must
    still be the cap, not an exception (from attempt 1024, about 4 h of failed reconnects
    at the 30 s cap, ``base * 2**attempt`` overflowed a float and ended the client)."""
    client = Client(["ws://127.0.0.1:1"])
    assert 0.0 <= client._backoff(1024) <= 30.0
    assert 0.0 <= client._backoff(100_000) <= 30.0


@pytest.mark.anyio
async def test_failed_attempts_back_off_longer_and_a_connection_resets_it() -> None:
    """The Client passes 0, 1, 2, ... to the backoff while attempts keep failing, and
    starts again from 0 after a connection that completed its handshake ended."""

    class Attempts(Client):
        seen: list[int]

        def _backoff(self, attempt: int) -> float:
            self.seen.append(attempt)
            return 0.01

    dead = Attempts([refused_url()])
    dead.seen = []
    with anyio.fail_after(10):
        async with dead:
            await wait_for(lambda: len(dead.seen) >= 4)
        assert dead.seen[:4] == [0, 1, 2, 3]

        hub = Hub()
        connects: list[Connection] = []

        @hub.on_connect
        async def joined(conn: Connection) -> None:
            connects.append(conn)

        async with running(hub, ["ws"]) as bound:
            live = Attempts([url(bound, "ws")], **FAST)
            live.seen = []
            async with live:
                for n in (1, 2):
                    # Closed once the client saw CONNECT_ACK: it was really connected.
                    await wait_for(
                        lambda n=n: len(connects) == n and live.state is ConnectionState.CONNECTED
                    )
                    connects[-1].close(CloseCode.SERVER_SHUTDOWN)
                await wait_for(lambda: len(connects) == 3)
            assert live.seen == [0, 0]
