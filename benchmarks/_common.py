"""Shared pieces of the benchmark suite (``benchmarks/run.py``): result rows, medians,
child processes and /proc readings.

Every measurement module exposes ``measure(quick: bool) -> list[Row]``; ``run.py`` prints
the rows as one table and writes them as JSON. Benchmarks only run as scripts, never as
timed assertions in the test suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Row:
    """One line of the table: flare against its peer measured in the same run.

    ``ratio`` is what the goal is stated on; ``at_least`` says whether the goal is a floor
    (``ratio >= goal``) or a ceiling (``ratio <= goal``).
    """

    id: str
    measure: str
    peer_name: str
    flare: float
    peer: float | None
    unit: str
    ratio: float | None
    goal: float
    at_least: bool
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        if self.ratio is None:
            return False
        return self.ratio >= self.goal if self.at_least else self.ratio <= self.goal

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "flare": _round(self.flare),
            "peer": _round(self.peer),
            "ratio": _round(self.ratio),
            "goal": self.goal,
            "unit": self.unit,
            "goal_is": ">=" if self.at_least else "<=",
            "met": self.met,
        }
        data.update(self.extra)
        return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def paired_ratio(flare: Sequence[float], peer: Sequence[float], *, inverse: bool = False) -> float:
    """The median of the per-repeat ratios flare / peer (peer / flare with ``inverse``):
    repeat i of flare was measured next to repeat i of the peer, so each ratio compares
    like with like, which holds better than a ratio of medians on a machine whose load
    changes during the run."""
    pairs = zip(flare, peer, strict=True)
    return statistics.median([p / f if inverse else f / p for f, p in pairs])


def speed_row(
    id: str,
    measure: str,
    peer_name: str,
    flare: Sequence[float],
    peer: Sequence[float],
    unit: str,
    goal: float,
    *,
    rate: bool,
    note: str = "",
) -> Row:
    """A "flare at least ``goal`` times as fast as the peer" row from paired samples.
    With ``rate`` the samples are rates (higher is better) and the ratio is flare / peer;
    otherwise they are costs per operation and the ratio is peer / flare."""
    ratio = paired_ratio(flare, peer, inverse=not rate)
    return _row(id, measure, peer_name, flare, peer, unit, ratio, goal, True, note)


def cost_row(
    id: str,
    measure: str,
    peer_name: str,
    flare: Sequence[float],
    peer: Sequence[float],
    unit: str,
    goal: float,
    *,
    note: str = "",
) -> Row:
    """A "flare costs at most ``goal`` times the peer" row (latency, memory) from paired
    samples: the ratio is flare / peer."""
    ratio = paired_ratio(flare, peer)
    return _row(id, measure, peer_name, flare, peer, unit, ratio, goal, False, note)


def _row(
    id: str,
    measure: str,
    peer_name: str,
    flare: Sequence[float],
    peer: Sequence[float],
    unit: str,
    ratio: float,
    goal: float,
    at_least: bool,
    note: str,
) -> Row:
    return Row(
        id,
        measure,
        peer_name,
        statistics.median(flare),
        statistics.median(peer),
        unit,
        ratio,
        goal,
        at_least=at_least,
        note=note,
        extra={"repeats": len(flare)},
    )


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    return sum(cpu_split(pid))


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux /proc)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


class Child:
    """A benchmark child process speaking JSON lines on stdout.

    ``python -m``-style: runs ``sys.executable`` with ``args`` from the repository root,
    stdin closed, stderr passed through (so a crash is visible) unless ``quiet`` (for
    servers that log every connection). Terminated (then killed)
    on exit from the ``with`` block, so no server outlives the benchmark.
    """

    def __init__(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, quiet: bool = False
    ) -> None:
        self.args = [sys.executable, *args]
        self.env = env
        self.quiet = quiet
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Child:
        environ = dict(os.environ)
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), str(BENCH_DIR), environ.get("PYTHONPATH")])
        )
        environ.update(self.env or {})
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if self.quiet else None,
            text=True,
            env=environ,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def line(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line the child prints (a dict); raises if it exits first."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            text = self.proc.stdout.readline()
            if not text:
                code = self.proc.wait(5)
                raise RuntimeError(f"child {self.args[1:3]} exited ({code}) before a result")
            text = text.strip()
            if text.startswith("{"):
                data: dict[str, Any] = json.loads(text)
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {self.args[1:3]} printed no JSON in {timeout} s")

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON line for the parent (see :meth:`Child.line`)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def children(*specs: Sequence[str]) -> Iterator[list[Child]]:
    """Start several :class:`Child` processes; all are stopped on exit."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Child(spec)) for spec in specs]
