"""Happy-Eyeballs protocol racing over transport URLs (DESIGN §5).

Start the first URL; start the next after ``stagger`` seconds or as soon as the previous
attempt failed; the first transport that is ready (TLS included) wins, and every other
attempt is cancelled and closed before this function returns, so CONNECT only ever goes
out on the winner (the original let losers send CONNECT too, B30/B31). URLs that lost by
failing are remembered as broken (5 min, doubling on repeat) and tried last.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from ._clock import now
from ._transport import Transport

K = TypeVar("K")
R = TypeVar("R")


class RaceFailed(ConnectionError):
    """Every URL failed; ``errors`` maps each URL to its exception."""

    def __init__(self, errors: dict[str, BaseException]) -> None:
        detail = "; ".join(f"{url}: {exc!r}" for url, exc in errors.items())
        super().__init__(f"no transport could connect ({detail})")
        self.errors = errors


class BrokenTransports:
    """Which URLs recently failed, and until when they are tried last."""

    def __init__(self, penalty: float = 300.0) -> None:
        self.penalty = penalty
        self._until: dict[str, tuple[float, float]] = {}

    def mark(self, url: str) -> None:
        """``url`` failed: broken for the penalty, doubled if it was already broken."""
        _, last = self._until.get(url, (0.0, self.penalty / 2))
        span = last * 2
        self._until[url] = (now() + span, span)

    def clear(self, url: str) -> None:
        """``url`` worked: forget its failures."""
        self._until.pop(url, None)

    def is_broken(self, url: str) -> bool:
        """Whether ``url`` is inside its penalty window."""
        entry = self._until.get(url)
        return entry is not None and entry[0] > now()

    def order(self, urls: Sequence[str]) -> list[str]:
        """``urls`` in priority order with the broken ones moved to the end."""
        return [u for u in urls if not self.is_broken(u)] + [u for u in urls if self.is_broken(u)]


async def race(
    urls: Sequence[str],
    dial: Callable[[str], Awaitable[Transport]],
    *,
    stagger: float = 0.25,
    broken: BrokenTransports | None = None,
) -> tuple[Transport, str]:
    """Connect to the first of ``urls`` that becomes ready; returns ``(transport, url)``.
    Raises :class:`RaceFailed` if all fail."""
    if not urls:
        raise ValueError("race() needs at least one URL")
    broken = broken or BrokenTransports()
    errors: dict[str, BaseException] = {}

    def failed(url: str, exc: Exception) -> None:
        errors[url] = exc
        broken.mark(url)

    async def discard(transport: Transport, won: bool) -> None:
        # Either way it never sent CONNECT.
        await transport.aclose(None, "race cancelled" if won else "lost the race")

    won = await first_ready(
        broken.order(urls), dial, stagger=stagger, discard=discard, on_failure=failed
    )
    if won is None:
        raise RaceFailed(errors)
    broken.clear(won[1])
    return won


async def first_ready(
    candidates: Sequence[K],
    attempt: Callable[[K], Awaitable[R]],
    *,
    stagger: float,
    discard: Callable[[R, bool], Awaitable[None]],
    on_failure: Callable[[K, Exception], None],
) -> tuple[R, K] | None:
    """Happy Eyeballs over ``candidates``, in order: start ``attempt(candidate)``, the
    next one ``stagger`` seconds later or as soon as the previous failed (each failure is
    told to ``on_failure``); the first to succeed wins and every other attempt is
    cancelled, or ``discard(result, False)``-ed if it succeeded too; the winner gets
    ``discard(result, True)`` if this call is cancelled before it returns. Returns
    ``(result, candidate)``, or ``None`` when all failed. Shared by :func:`race`
    (transports) and ``_tcp.connect_tcp`` (addresses)."""
    if len(candidates) == 1:
        # Nothing to race: attempt in this task (a task group and a task start cost two
        # event-loop turns on every connect, a tenth of a loopback handshake).
        only = candidates[0]
        try:
            return await attempt(only), only
        except Exception as exc:
            on_failure(only, exc)
            return None
    winner: tuple[R, K] | None = None
    try:
        async with anyio.create_task_group() as tg:

            async def run(candidate: K, failed: anyio.Event) -> None:
                nonlocal winner
                try:
                    result = await attempt(candidate)
                except Exception as exc:
                    on_failure(candidate, exc)
                    failed.set()
                    return
                if winner is None:
                    winner = (result, candidate)
                    tg.cancel_scope.cancel()
                else:  # a simultaneous finisher
                    with anyio.CancelScope(shield=True):
                        await discard(result, False)

            for index, candidate in enumerate(candidates):
                failed = anyio.Event()
                tg.start_soon(run, candidate, failed)
                if index < len(candidates) - 1:
                    with anyio.move_on_after(max(0.0, stagger)):
                        await failed.wait()
    except BaseException:
        # Cancelled after a winner was chosen: nobody will use it, so discard it here.
        if winner is not None:
            with anyio.CancelScope(shield=True):
                await discard(winner[0], True)
        raise
    return winner
