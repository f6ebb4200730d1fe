"""Subprocess helpers for the end-to-end tests of the ``flare`` command.

:class:`FlareProcess` runs ``flare ...`` with pipes on stdin/stdout/stderr. Two daemon
threads read stdout and stderr line by line, so a test never blocks on a pipe: it waits
for a matching stdout line with a deadline (:meth:`FlareProcess.expect`) and the process
is always killed by :meth:`FlareProcess.close` (use it as a context manager).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
FLARE_SCRIPT = Path(sys.executable).with_name("flare")
"""The ``flare`` console script of the venv running the tests (``.venv/bin/flare``)."""


def flare_command(*args: str, script: bool = False) -> list[str]:
    """``python -m flare_drivers ARGS`` (or the ``flare`` console script)."""
    if script:
        return [str(FLARE_SCRIPT), *args]
    return [sys.executable, "-m", "flare_drivers", *args]


Line = Any  # a parsed JSON value, or the raw text of a line that is not JSON


class FlareProcess:
    """A running ``flare`` subprocess whose output lines are collected by threads."""

    def __init__(self, argv: Sequence[str], *, name: str = "flare", graceful: float = 0.0) -> None:
        self.name = name
        self.graceful = graceful
        """Seconds :meth:`close` waits for an exit after closing stdin, before killing."""
        self.argv = list(argv)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.lines: list[Line] = []
        """Every stdout line so far (JSON-decoded when possible), in order."""
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self._stdout_done = False
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- reading --------------------------------------------------------------------------

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                text = raw.rstrip("\n")
                try:
                    item: Line = json.loads(text)
                except ValueError:
                    item = text
                with self._cond:
                    self.lines.append(item)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._stdout_done = True
                self._cond.notify_all()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.stderr_lines.append(raw.rstrip("\n"))

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.stderr_lines)

    def describe(self) -> str:
        """Everything the process printed, for assertion messages."""
        with self._cond:
            out = "\n".join(json.dumps(x, ensure_ascii=False) for x in self.lines)
            err = "\n".join(self.stderr_lines[-40:])
        return (
            f"\n--- {self.name}: {' '.join(self.argv)} (returncode {self.proc.poll()})"
            f"\n--- stdout:\n{out}\n--- stderr (tail):\n{err}\n"
        )

    def expect(
        self, predicate: Callable[[Line], bool], timeout: float = 5.0, *, start: int = 0
    ) -> Line:
        """The first stdout line from index ``start`` on that satisfies ``predicate``;
        waits up to ``timeout`` seconds, else fails the test with the output so far."""
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    line = self.lines[index]
                    index += 1
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._stdout_done and index >= len(self.lines)):
                    break
                self._cond.wait(remaining)
        raise AssertionError(
            f"{self.name}: no matching stdout line in {timeout} s{self.describe()}"
        )

    def expect_event(self, timeout: float = 5.0, *, start: int = 0, **fields: Any) -> Any:
        """The first JSON object line whose items include ``fields``."""

        def match(line: Line) -> bool:
            return isinstance(line, dict) and all(line.get(k) == v for k, v in fields.items())

        return self.expect(match, timeout, start=start)

    def matching(self, **fields: Any) -> list[Any]:
        """All JSON object lines so far whose items include ``fields``."""
        with self._cond:
            return [
                x
                for x in self.lines
                if isinstance(x, dict) and all(x.get(k) == v for k, v in fields.items())
            ]

    # -- writing and stopping -------------------------------------------------------------

    def send_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def wait(self, timeout: float) -> int | None:
        """The exit status, or ``None`` if still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Send ``sig`` and wait up to ``timeout`` seconds for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def close(self) -> None:
        """Close stdin, give the process :attr:`graceful` seconds to exit, then kill it;
        release the pipes (idempotent)."""
        self.close_stdin()
        if self.graceful and self.proc.poll() is None:
            self.wait(self.graceful)
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a kill cannot be ignored
            self.proc.wait(5)
        for thread in self._threads:
            thread.join(2)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ServeProcess(FlareProcess):
    """``flare serve ...``; :attr:`addresses` is the parsed ready line."""

    def __init__(self, *args: str, script: bool = False, ready_timeout: float = 10.0) -> None:
        super().__init__(flare_command("serve", *args, script=script), name="flare serve")
        self.addresses: dict[str, str] = {}
        try:
            ready = self.expect(lambda line: isinstance(line, dict), ready_timeout)
        except BaseException:
            self.close()
            raise
        self.addresses = ready
        self.ready_line: str = json.dumps(ready)

    def url(self, kind: str) -> str:
        """``ws://host:port`` etc. for the listener ``kind`` (``ws``, ``wss``, ``quic``)."""
        return f"{kind}://{self.addresses[kind]}"


def connect_process(*urls: str, options: Sequence[str] = (), name: str = "client") -> FlareProcess:
    """``flare connect OPTIONS URLS``; stdin EOF ends it, so :meth:`FlareProcess.close`
    lets it close its connection cleanly (2 s) before killing it."""
    return FlareProcess(flare_command("connect", *options, *urls), name=name, graceful=2.0)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody listens on (just released by us)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
