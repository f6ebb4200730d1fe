"""Handlers by command kind and by custom-command name (the original's message router).

Used by both the server hub and the client: ``@router.on(CommandKind.SEND)`` and
``@router.on_custom("typing")`` register ``async def handler(target, frame)``; a custom
command with a registered name goes to its own handler, anything else to the kind's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from flare_proto import CommandKind, Frame

T = TypeVar("T")
Handler = Callable[[T, Frame], Awaitable[None]]


class Router(Generic[T]):
    """A table of async frame handlers keyed by kind and custom-command name."""

    def __init__(self) -> None:
        self._by_kind: dict[CommandKind, Handler[T]] = {}
        self._by_custom: dict[str, Handler[T]] = {}

    def on(self, kind: CommandKind) -> Callable[[Handler[T]], Handler[T]]:
        """Decorator: handle frames of ``kind`` (replaces an earlier handler)."""

        def register(handler: Handler[T]) -> Handler[T]:
            self._by_kind[kind] = handler
            return handler

        return register

    def on_custom(self, name: str) -> Callable[[Handler[T]], Handler[T]]:
        """Decorator: handle CustomCommands named ``name``."""

        def register(handler: Handler[T]) -> Handler[T]:
            self._by_custom[name] = handler
            return handler

        return register

    async def dispatch(self, target: T, frame: Frame, kind: CommandKind) -> bool:
        """Run the matching handler; ``False`` when none is registered."""
        handler = None
        if kind is CommandKind.CUSTOM:
            handler = self._by_custom.get(frame.command.custom.name)
        if handler is None:
            handler = self._by_kind.get(kind)
        if handler is None:
            return False
        await handler(target, frame)
        return True
