"""``python -m fuzz``: run the harnesses for a time budget; exit 1 on a finding.

Examples::

    python -m fuzz --seconds 40                 # all four harnesses, 10 s each
    python -m fuzz --target server --runs 100000
    python -m fuzz --engine random --seconds 20 --seed 7
    python -m fuzz --reproduce fuzz/findings/decode-crash-0123abcd...
    python -m fuzz --harness pkg.module --runs 100   # a harness of your own (tests)

Exit status: 0 no finding, 1 a finding (its reproducer is printed in hex and saved under
``fuzz/findings/``), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from ._engines import Result, atheris_available, run_atheris, run_random
from ._targets import TARGETS, load

FINDINGS_DIR = Path(__file__).resolve().parent / "findings"
"""Where reproducers are saved by default."""
DEFAULT_SECONDS = 40.0
_STARTUP_GUESS = 1.5  # seconds an atheris subprocess spends before libFuzzer's clock runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz",
        description="Fuzz flare's sans-IO core: frame decoding, the length-prefix framer, "
        "a server connection and a client connection fed arbitrary bytes.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="total time budget shared equally by the harnesses (default 40; unlimited "
        "when only --runs is given)",
    )
    parser.add_argument(
        "--target",
        action="append",
        choices=TARGETS,
        help="run only this harness (repeatable; default: all)",
    )
    parser.add_argument(
        "--harness",
        metavar="MODULE",
        help="run the harness in MODULE (a dotted module path, importable from here or "
        "PYTHONPATH, with one_input, seeds and MEMORY_LIMIT) instead of flare's; for "
        "testing the runner itself",
    )
    parser.add_argument("--runs", type=int, help="stop each harness after this many inputs")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "random"),
        default="auto",
        help="atheris (libFuzzer, coverage-guided) or random (in-process mutation loop); "
        "auto: atheris when installed",
    )
    parser.add_argument("--seed", type=int, help="random seed (random engine default 0)")
    parser.add_argument(
        "--max-len", type=int, default=4096, help="largest input generated (default 4096)"
    )
    parser.add_argument(
        "--corpus-dir",
        type=Path,
        help="atheris: keep the inputs libFuzzer finds interesting in DIR/<target>",
    )
    parser.add_argument(
        "--findings-dir", type=Path, default=FINDINGS_DIR, help="where reproducers go"
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="random engine: hold every input's peak allocation to the harness's limit",
    )
    parser.add_argument("--verbose", action="store_true", help="show libFuzzer's output")
    parser.add_argument(
        "--reproduce",
        type=Path,
        metavar="FILE",
        help="run one saved input (target from --target or the file name) and show the traceback",
    )
    parser.add_argument(
        "--write-seeds", type=Path, metavar="DIR", help="write the seed corpora to DIR/<target>"
    )
    return parser


def reproduce(path: Path, target: str | None) -> int:
    """Run ``path``'s bytes through a harness; 1 (and the traceback) if it still fails."""
    name = target or path.name.split("-", 1)[0]
    try:
        harness = load(name)
    except (KeyError, ImportError):
        print(f"cannot tell the harness from {path.name!r}; pass --target", file=sys.stderr)
        return 2
    data = path.read_bytes()
    print(f"{name}: {len(data)} bytes: {data.hex()}")
    try:
        harness.one_input(data)
    except Exception:
        traceback.print_exc()
        return 1
    print("no finding: the input passes")
    return 0


def write_seeds(directory: Path, targets: Sequence[str]) -> int:
    """Write each harness's seeds as files named by their SHA-1."""
    import hashlib

    for name in targets:
        out = directory / name
        out.mkdir(parents=True, exist_ok=True)
        seeds = load(name).seeds()
        for data in seeds:
            (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{name}: {len(seeds)} seeds in {out}")
    return 0


def _line(result: Result) -> str:
    rate = result.executions / result.seconds if result.seconds > 0 else 0.0
    status = "FINDING" if result.finding is not None else "ok"
    return (
        f"{result.target:<7} {result.engine:<8} {result.executions:>12,} execs "
        f"{result.seconds:7.1f} s {rate:>10,.0f} exec/s  {status}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the harnesses, print a summary; return the exit status."""
    args = _parser().parse_args(argv)
    targets: list[str]
    if args.harness is not None:
        if args.target or "." not in args.harness or "-" in args.harness:
            print("--harness takes a dotted module path, without --target", file=sys.stderr)
            return 2
        try:
            load(args.harness)
        except (ImportError, AttributeError) as exc:
            print(f"--harness {args.harness}: {exc!r}", file=sys.stderr)
            return 2
        targets = [args.harness]
    else:
        targets = list(dict.fromkeys(args.target or TARGETS))
    if args.reproduce is not None:
        return reproduce(args.reproduce, targets[0] if args.harness or args.target else None)
    if args.write_seeds is not None:
        return write_seeds(args.write_seeds, targets)
    if args.runs is not None and args.runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2
    seconds: float | None = args.seconds
    if seconds is None and args.runs is None:
        seconds = DEFAULT_SECONDS
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "random"
    elif engine == "atheris" and not atheris_available():
        print("atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    budget = "no time limit" if seconds is None else f"{seconds:g} s in total"
    runs = "" if args.runs is None else f", at most {args.runs:,} runs each"
    print(f"fuzz: engine {engine}, targets {', '.join(targets)}; {budget}{runs}", flush=True)

    start = time.monotonic()
    results: list[Result] = []
    overhead = _STARTUP_GUESS if engine == "atheris" else 0.0
    for index, name in enumerate(targets):
        slice_seconds: float | None = None
        if seconds is not None:
            remaining = seconds - (time.monotonic() - start)
            slice_seconds = max(remaining / (len(targets) - index) - overhead, 0.5)
        harness = load(name)
        if engine == "atheris":
            result = run_atheris(
                harness,
                seconds=slice_seconds,
                runs=args.runs,
                seed=args.seed,
                max_len=args.max_len,
                findings_dir=args.findings_dir,
                corpus_dir=args.corpus_dir,
                verbose=args.verbose,
            )
            if slice_seconds is not None and result.finding is None:
                overhead = max(0.0, result.seconds - max(1, round(slice_seconds)))
        else:
            result = run_random(
                harness,
                seconds=slice_seconds,
                runs=args.runs,
                seed=0 if args.seed is None else args.seed,
                max_len=args.max_len,
                findings_dir=args.findings_dir,
                trace_memory=args.trace_memory,
            )
        results.append(result)
        print(_line(result), flush=True)
        if result.finding is not None or result.detail:
            _report(result)

    total = sum(r.executions for r in results)
    elapsed = time.monotonic() - start
    findings = [r for r in results if r.finding is not None or r.detail]
    print(
        f"total   {engine:<8} {total:>12,} execs {elapsed:7.1f} s "
        f"{total / elapsed if elapsed > 0 else 0:>10,.0f} exec/s  "
        f"{len(findings)} finding(s)"
    )
    return 1 if findings else 0


def _report(result: Result) -> None:
    print(f"--- finding in {result.target} ---")
    print(result.detail.rstrip())
    if result.finding is not None and result.finding.exists():
        data = result.finding.read_bytes()
        print(f"reproducer ({len(data)} bytes), saved as {result.finding}:")
        print(data.hex())
        print(f"replay: python -m fuzz --reproduce {result.finding}")
    print("---")


if __name__ == "__main__":
    sys.exit(main())
