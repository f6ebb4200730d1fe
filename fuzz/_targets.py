"""The registry of harnesses: name -> module, imported only when asked for.

The package itself imports nothing from ``flare_proto``, so the atheris worker can import
the core under coverage instrumentation before any harness module pulls it in.

Besides the registered names, :func:`load` takes a dotted module path (``pkg.module``):
``python -m fuzz --harness pkg.module`` runs a harness that is not one of flare's. It is
there so the tests can plant a harness that fails and check the runner's whole reporting
path (exit status, reproducer file), with either engine; a dotted name never collides
with a registered one, and a mistyped registered name is still an error.
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
    """Import the harness module ``fuzz.<name>``, or the module ``name`` itself when it is
    a dotted path (the ``--harness`` hook: it needs ``one_input``, ``seeds`` and
    ``MEMORY_LIMIT``, and keeps ``name`` as its name, which contains no ``-``, so reproducer
    files ``<name>-crash-<sha1>`` still name it). ``KeyError`` for any other name."""
    if name in TARGETS:
        module = importlib.import_module(f"fuzz.{name}")
    elif "." in name and "-" not in name:
        module = importlib.import_module(name)
    else:
        raise KeyError(name)
    return Harness(
        name=name,
        one_input=module.one_input,
        seeds=module.seeds,
        memory_limit=module.MEMORY_LIMIT,
    )
