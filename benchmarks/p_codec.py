"""P1 and P2: the frame codec against bare upb and a bare orjson round trip.

Wraps ``codec.py`` (which documents the four cases): every repeat runs each case for a
calibrated number of calls, cases interleaved, and each ratio is the median of the
per-repeat throughput ratios (peer time / flare time).

    .venv/bin/python benchmarks/p_codec.py [--quick]
"""

from __future__ import annotations

import argparse

import codec
from _common import Row, speed_row


def measure(quick: bool) -> list[Row]:
    """P1 (Protobuf) and P2 (JSON serde shape), µs per build + encode + decode + read."""
    codec.check()
    repeats, target = (7, 0.1) if quick else (15, 0.15)
    samples = codec.measure(repeats, target)
    us = {name: [ns / 1000 for ns in values] for name, values in samples.items()}
    return [
        speed_row(
            "P1",
            "Protobuf SEND 256 B: build + encode + decode + read",
            "bare upb, same steps",
            us["(a) flare protobuf"],
            us["(b) bare upb"],
            "µs/op",
            0.8,
            rate=False,
        ),
        speed_row(
            "P2",
            "JSON (serde shape) SEND 256 B round trip",
            "orjson serde-shape dict round trip",
            us["(c) flare JSON"],
            us["(d) orjson dict"],
            "µs/op",
            0.8,
            rate=False,
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in measure(parser.parse_args().quick):
        print(row)
