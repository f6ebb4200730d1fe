"""The registry of harnesses: name -> module, imported only when asked for.

The package itself imports nothing from ``flare_proto``, so the atheris worker can import
the core under coverage instrumentation before any harness module pulls it in.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TARGETS", "Harness", "load"]

TARGETS = ("decode", "framer", "server", "client")
"""Every harness, in the order ``python -m fuzz`` runs them."""


@dataclass(frozen=True)
class Harness:
    """One harness: its entry point, its seed corpus and its per-input memory limit."""

    name: str
    one_input: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    memory_limit: int
    """Peak bytes of Python allocations one input may take (tracemalloc)."""


def load(name: str) -> Harness:
    """Import the harness module ``fuzz.<name>``; ``KeyError`` for an unknown name."""
    if name not in TARGETS:
        raise KeyError(name)
    module = importlib.import_module(f"fuzz.{name}")
    return Harness(
        name=name,
        one_input=module.one_input,
        seeds=module.seeds,
        memory_limit=module.MEMORY_LIMIT,
    )
