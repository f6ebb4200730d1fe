"""The two ways to run a harness: libFuzzer through atheris, or a random-mutation loop.

Both run one harness for a time slice and/or a number of executions and report a
:class:`Result`: executions done, seconds taken, and the reproducer file if the harness
found something.

``atheris`` (preferred when importable): a ``python -m fuzz._atheris_worker`` subprocess
per harness, coverage-guided, seeded from the harness's ``seeds()`` (written to a temporary
directory) plus ``--corpus-dir`` if given, with ``flare.dict``; libFuzzer's own limits
catch slow inputs (``-timeout``) and memory growth (``-rss_limit_mb``). The execution count
is read from ``-print_final_stats``.

``random`` (fallback): in process; every seed first, then seeds mutated by
:func:`fuzz._mutate.mutate`, deterministic for a given ``--seed``. A SIGALRM timer bounds
each input's time; the process's peak RSS is checked every 1024 inputs; with
``trace_memory`` each input's peak Python allocation is measured with ``tracemalloc`` and
held to the harness's ``memory_limit``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ._dictionary import DICTIONARY_PATH, tokens
from ._mutate import mutate
from ._targets import Harness

__all__ = [
    "INPUT_TIMEOUT",
    "RSS_LIMIT_MB",
    "Result",
    "atheris_available",
    "run_atheris",
    "run_random",
    "save_finding",
]

INPUT_TIMEOUT = 10
"""Seconds one input may take before it is reported as a finding (a hang)."""
RSS_LIMIT_MB = 2048
"""Peak resident memory of a fuzzing process before it is reported as a finding."""
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """How one harness's run went."""

    target: str
    engine: str
    executions: int
    seconds: float
    finding: Path | None = None
    """The reproducer file, when the harness found something."""
    detail: str = ""
    """What was found (the exception and traceback, or libFuzzer's report)."""


def atheris_available() -> bool:
    """Whether ``import atheris`` would work here."""
    return importlib.util.find_spec("atheris") is not None


def save_finding(findings_dir: Path, target: str, data: bytes) -> Path:
    """Write a reproducer as ``<target>-crash-<sha1>`` (libFuzzer's naming) and return it."""
    findings_dir.mkdir(parents=True, exist_ok=True)
    path = findings_dir / f"{target}-crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


class _InputTimeout(BaseException):
    """Raised by the SIGALRM handler inside a harness that ran too long (a BaseException,
    so that no ``except Exception`` in the code under test can swallow it)."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _InputTimeout(f"one input ran longer than {INPUT_TIMEOUT} s")


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS, where this is then conservative).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_random(
    harness: Harness,
    *,
    seconds: float | None,
    runs: int | None,
    seed: int,
    max_len: int,
    findings_dir: Path,
    trace_memory: bool = False,
) -> Result:
    """Run ``harness`` in this process: every seed, then mutations, until ``seconds`` or
    ``runs`` (whichever comes first) or a finding."""
    rng = random.Random(seed)
    corpus = [s[:max_len] for s in harness.seeds()] or [b""]
    words = tokens()
    one_input: Callable[[bytes], None] = harness.one_input
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    use_alarm = hasattr(signal, "setitimer")
    previous = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    if trace_memory:
        tracemalloc.start()
    executions = 0
    data = b""
    try:
        while runs is None or executions < runs:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if executions < len(corpus):
                data = corpus[executions]
            else:
                data = mutate(rng, rng.choice(corpus), corpus, words, max_len)
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, INPUT_TIMEOUT)
            if trace_memory:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
            try:
                one_input(data)
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            executions += 1
            if trace_memory:
                peak = tracemalloc.get_traced_memory()[1] - base
                if peak > harness.memory_limit:
                    raise MemoryError(
                        f"one input allocated {peak} bytes at peak (limit {harness.memory_limit})"
                    )
            if executions % 1024 == 0 and _peak_rss_mb() > RSS_LIMIT_MB:
                raise MemoryError(f"process RSS above {RSS_LIMIT_MB} MiB")
    except (Exception, _InputTimeout) as exc:  # anything escaping a harness is a finding
        elapsed = time.monotonic() - start
        path = save_finding(findings_dir, harness.name, data)
        detail = "".join(traceback.format_exception(exc))
        return Result(harness.name, "random", executions + 1, elapsed, path, detail)
    finally:
        if trace_memory:
            tracemalloc.stop()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return Result(harness.name, "random", executions, time.monotonic() - start)


_STAT_RE = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_PROGRESS_RE = re.compile(r"^#(\d+)\s", re.MULTILINE)
_ARTIFACT_RE = re.compile(r"Test unit written to (\S+)")


def run_atheris(
    harness: Harness,
    *,
    seconds: float | None,
    runs: int | None,
    seed: int | None,
    max_len: int,
    findings_dir: Path,
    corpus_dir: Path | None = None,
    verbose: bool = False,
) -> Result:
    """Run ``harness`` under libFuzzer in a subprocess for ``seconds`` (rounded, at least 1)
    and/or ``runs`` executions."""
    name = harness.name
    findings_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"flare-fuzz-{name}-") as tmp:
        seed_dir = Path(tmp) / "seeds"
        seed_dir.mkdir()
        for data in harness.seeds():
            (seed_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)
        if corpus_dir is not None:
            work_dir = corpus_dir / name
            work_dir.mkdir(parents=True, exist_ok=True)
        else:
            work_dir = Path(tmp) / "work"
            work_dir.mkdir()
        command = [
            sys.executable,
            "-m",
            "fuzz._atheris_worker",
            name,
            f"-max_total_time={0 if seconds is None else max(1, round(seconds))}",
            f"-runs={-1 if runs is None else runs}",
            f"-max_len={max_len}",
            f"-timeout={INPUT_TIMEOUT}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={findings_dir}/{name}-",
            "-print_final_stats=1",
            "-print_pcs=0",
        ]
        if DICTIONARY_PATH.exists():
            command.append(f"-dict={DICTIONARY_PATH}")
        if seed is not None:
            command.append(f"-seed={seed}")
        command += [str(work_dir), str(seed_dir)]
        log_path = Path(tmp) / "libfuzzer.log"
        start = time.monotonic()
        with log_path.open("wb") as log:
            limit = None if seconds is None else seconds + 300
            try:
                proc = subprocess.run(
                    command,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=None if verbose else log,
                    stderr=None if verbose else subprocess.STDOUT,
                    timeout=limit,
                    check=False,
                )
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = -1
        elapsed = time.monotonic() - start
        text = log_path.read_text("utf-8", "replace")
    stats = _STAT_RE.findall(text)
    progress = _PROGRESS_RE.findall(text)
    executions = int(stats[-1]) if stats else int(progress[-1]) if progress else 0
    if code == 0:
        return Result(name, "atheris", executions, elapsed)
    artifacts = _ARTIFACT_RE.findall(text)
    path = Path(artifacts[-1]) if artifacts else None
    if path is not None and not path.is_absolute():
        path = REPO_ROOT / path
    return Result(name, "atheris", executions, elapsed, path, _report(text, code))


def _report(text: str, code: int) -> str:
    """The part of a libFuzzer log that says what went wrong."""
    lines = text.splitlines()
    for marker in ("=== Uncaught Python exception: ===", "==ERROR: libFuzzer", "ALARM:"):
        for index, line in enumerate(lines):
            if marker in line:
                return "\n".join(line[:300] for line in lines[index : index + 60])
    tail = "\n".join(line[:300] for line in lines[-40:])
    return f"libFuzzer exited with status {code}\n{tail}"
