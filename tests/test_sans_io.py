"""DESIGN §1: ``flare_proto`` is a sans-IO core.

It imports only the standard library, ``protobuf``, ``zstandard`` and ``orjson``, and never
an I/O, clock, randomness or driver library: time (``now``) and ids are injected by the
caller. Two checks enforce it:

- a static scan of the source (the authoritative check: it sees every import, including
  ones inside functions or ``TYPE_CHECKING`` blocks);
- importing ``flare_proto`` in a fresh interpreter and looking at ``sys.modules`` (catches
  I/O libraries pulled in indirectly, e.g. through a third-party dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flare_proto"

# Modules the core must never import (top-level names; submodules such as
# ``asyncio.events`` are matched through their top-level package).
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "anyio",
        "trio",
        "socket",
        "ssl",
        "selectors",
        "time",
        "random",
        "secrets",
        "threading",
        "wsproto",
        "aioquic",
        "h11",
    }
)

# The only third-party imports allowed in the core (DESIGN §1; orjson: docs/decisions.md).
ALLOWED_THIRD_PARTY = ("google.protobuf", "zstandard", "orjson")

# Checked at run time in a fresh interpreter. A subset of FORBIDDEN_MODULES on purpose:
# - ``time`` is already in ``sys.modules`` before any user code runs (CPython loads it at
#   start-up through ``zipimport``);
# - ``threading`` comes in through the standard library (e.g. ``logging``) and protobuf
#   (``google.protobuf.json_format``);
# - ``random``/``secrets``/``selectors`` can be loaded by stdlib modules the core may use
#   legitimately (``tempfile``, ``email``, ``subprocess``...).
# Their presence says nothing about the core itself; the static scan forbids them in our own
# code, which is what DESIGN §1 is about.
FORBIDDEN_AT_RUNTIME = frozenset(
    {"asyncio", "anyio", "trio", "socket", "ssl", "wsproto", "aioquic", "h11"}
)


def _is_excluded(path: Path) -> bool:
    rel = path.relative_to(PACKAGE)
    parts = rel.parts
    if parts[0] == "testing":
        # Test helpers (hypothesis strategies, fakes); never imported by the core itself.
        return True
    if parts[0] == "_pb":
        # Generated code, and the generator script (imports grpc_tools, test-only).
        return rel.name.endswith("_pb2.py") or rel.name == "regenerate.py"
    return False


def _core_sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not _is_excluded(p))


def _imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Yield ``(line, dotted module name)`` for every absolute import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                continue  # relative import: inside flare_proto
            module = node.module or ""
            if module == "google":
                # ``from google import protobuf``
                for alias in node.names:
                    yield node.lineno, f"google.{alias.name}"
            else:
                yield node.lineno, module
                if module == "os":
                    for alias in node.names:
                        yield node.lineno, f"os.{alias.name}"
        elif isinstance(node, ast.Call):
            # importlib.import_module("x") / __import__("x") with a literal name.
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                yield node.lineno, node.args[0].value


def _uses_os_urandom(tree: ast.AST) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "urandom"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    ]


def _is_allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top in FORBIDDEN_MODULES:
        return False
    if module == "os.urandom":
        return False
    if top == "flare_proto" or top == "__future__":
        return True
    if top in sys.stdlib_module_names:
        return True
    return any(module == m or module.startswith(m + ".") for m in ALLOWED_THIRD_PARTY)


def test_scan_sees_the_core() -> None:
    sources = _core_sources()
    rel = {p.relative_to(PACKAGE).as_posix() for p in sources}
    assert "__init__.py" in rel
    # The exclusions are narrow: nothing else under _pb/ or testing/ is skipped by accident.
    assert not any(r.endswith("_pb2.py") or r.startswith("testing/") for r in rel)


@pytest.mark.parametrize("path", _core_sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_core_module_imports_only_allowed_modules(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"line {line}: {module}"
        for line, module in _imported_modules(tree)
        if not _is_allowed(module)
    ]
    bad += [f"line {line}: os.urandom" for line in _uses_os_urandom(tree)]
    assert not bad, (
        f"{path.relative_to(ROOT)} breaks the sans-IO rule (DESIGN §1): "
        "the core takes `now` and ids from its caller and imports only the standard "
        f"library and {', '.join(ALLOWED_THIRD_PARTY)}. Offending: {bad}"
    )


def test_scanner_catches_violations() -> None:
    """The scanner itself flags the patterns it is meant to flag."""
    source = (
        "import asyncio\n"
        "from time import monotonic\n"
        "import os\n"
        "x = os.urandom(8)\n"
        "from os import urandom\n"
        "import importlib\n"
        "importlib.import_module('socket')\n"
        "import wsproto.events\n"
        "import requests\n"
        "from google import protobuf\n"
        "from . import _frames\n"
        "import zstandard, orjson, json\n"
    )
    tree = ast.parse(source)
    flagged = [m for _, m in _imported_modules(tree) if not _is_allowed(m)]
    assert sorted(flagged) == sorted(
        ["asyncio", "time", "os.urandom", "socket", "wsproto.events", "requests"]
    )
    assert _uses_os_urandom(tree) == [4]


def test_importing_the_core_loads_no_io_library() -> None:
    code = "import sys, flare_proto; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    tops = {name.split(".")[0] for name in loaded}
    assert not (tops & FORBIDDEN_AT_RUNTIME), sorted(tops & FORBIDDEN_AT_RUNTIME)
