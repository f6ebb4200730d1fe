"""Subprocess entry point for the atheris engine: ``python -m fuzz._atheris_worker NAME
[libFuzzer arguments]``.

``atheris.Fuzz()`` never returns (libFuzzer exits the process), so ``python -m fuzz`` runs
each harness in one of these. ``flare_proto`` is imported under
``atheris.instrument_imports`` first, so libFuzzer gets coverage feedback from the core;
the harness module (imported after) finds it already loaded.
"""

from __future__ import annotations

import importlib
import sys

from ._targets import load


def main() -> None:
    """Instrument the core, then hand the harness to libFuzzer."""
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m fuzz._atheris_worker NAME [libFuzzer args]")
    name = sys.argv[1]
    atheris = importlib.import_module("atheris")
    with atheris.instrument_imports(include=["flare_proto"]):
        importlib.import_module("flare_proto")
    harness = load(name)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], harness.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
