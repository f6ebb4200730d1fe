"""flare against its peers, P1–P8, in one run: one table, optionally a JSON file.

Every row measures flare and the peer it is judged against in the same run, repeats
interleaved, so that load changes on a shared machine hit both alike; values are medians
and each ratio is the median of the per-repeat ratios. See ``benchmarks/README.md`` for
what each row does exactly, and the README's Performance section for the latest table.

    .venv/bin/python benchmarks/run.py --quick --json out.json   # under 2 minutes
    .venv/bin/python benchmarks/run.py                            # the full run
    .venv/bin/python benchmarks/run.py --only P1,P5               # some rows

Needs the test extra (``pip install -e '.[test]'``: the ``websockets`` peer). Exit status 0
when every row ran (whether or not a goal was met); 1 if a row failed to run; 2 if the
peers are not installed.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row

MODULES: list[tuple[str, tuple[str, ...]]] = [
    ("p_codec", ("P1", "P2")),
    ("p_throughput", ("P3", "P4")),
    ("p_handshake", ("P5",)),
    ("p_broadcast", ("P6",)),
    ("p_scale", ("P7", "P8")),
]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(rows: list[Row]) -> None:
    """The results as one plain-text table."""
    header = f"{'id':<4}{'measure':<52}{'flare':>10}{'peer':>10} {'unit':<13}{'ratio':>7}  goal"
    print(header)
    print("-" * len(header))
    for row in rows:
        goal = f"{'≥' if row.at_least else '≤'} {row.goal:g}"
        verdict = "met" if row.met else "NOT met"
        if row.id == "P8":
            held = row.extra.get("held")
            ratio = f"held {held}"
            print(
                f"{row.id:<4}{row.measure[:51]:<52}{_fmt(row.flare):>10}{'—':>10} "
                f"{row.unit:<13}{ratio:>7}  {goal} {verdict}"
            )
            continue
        print(
            f"{row.id:<4}{row.measure[:51]:<52}{_fmt(row.flare):>10}{_fmt(row.peer):>10} "
            f"{row.unit:<13}{_fmt(row.ratio):>7}  {goal} {verdict}"
        )
    print()
    for row in rows:
        line = f"{row.id}: peer = {row.peer_name}"
        if row.note:
            line += f"; {row.note}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats: under 2 minutes")
    parser.add_argument("--json", metavar="FILE", help="write the results to FILE")
    parser.add_argument("--only", metavar="IDS", help="comma-separated ids, e.g. P1,P5")
    args = parser.parse_args(argv)
    wanted = {x.strip().upper() for x in args.only.split(",")} if args.only else None

    try:  # the peers: websockets comes with the test extra
        importlib.import_module("websockets")
    except ImportError:
        print("benchmarks/run.py needs the peers: .venv/bin/pip install -e '.[test]'")
        return 2
    started = time.monotonic()
    info = machine()
    print(
        f"flare benchmarks ({'quick' if args.quick else 'full'}): Python {info['python']}, "
        f"{info['cpus']} CPUs ({info['cpu']}), load average {info['load_average']}",
        flush=True,
    )
    rows: list[Row] = []
    failures: list[str] = []
    for module_name, ids in MODULES:
        if wanted is not None and not wanted & set(ids):
            continue
        t0 = time.monotonic()
        print(f"  running {', '.join(ids)} ({module_name}) ...", flush=True)
        try:
            module = importlib.import_module(module_name)
            produced: list[Row] = module.measure(args.quick)
        except Exception:
            traceback.print_exc()
            failures.append(module_name)
            continue
        finally:
            gc.collect()
        rows.extend(r for r in produced if wanted is None or r.id in wanted)
        print(f"  ... {time.monotonic() - t0:.1f} s", flush=True)

    print()
    print_table(rows)
    elapsed = time.monotonic() - started
    print(f"\ntotal {elapsed:.1f} s; {sum(r.met for r in rows)}/{len(rows)} goals met")
    if args.json:
        results: dict[str, Any] = {}
        for row in rows:
            if row.id == "P8":
                results[row.id] = {
                    "held": row.extra.get("held"),
                    "cpu_percent": row.flare,
                    **{k: v for k, v in row.to_json().items() if k not in ("flare", "peer")},
                }
            else:
                results[row.id] = row.to_json()
        results["_run"] = {
            "mode": "quick" if args.quick else "full",
            "seconds": round(elapsed, 1),
            "machine": info,
            "failed": failures,
        }
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"results written to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
