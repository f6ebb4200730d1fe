"""Codec benchmark: flare's encode/decode against bare upb and a bare orjson round trip.

One operation = a SEND frame with a 256-byte payload is built, encoded, decoded and read
(payload and message id), which is what a gateway does per message:

  (a) flare protobuf   message_frame (flare's builder), encode_frame, decode_frame, read
  (b) bare upb         the fastest plain build (fields set in place on the generated
                       classes), SerializeToString, Frame.FromString, read
  (c) flare JSON       message_frame, encode_frame(JSON), decode_frame, read
  (d) orjson dict      build the serde-shape dict, orjson.dumps, orjson.loads,
                       bytes(payload list), read

Prints the median ns/op over several repeats, ops/s, and the throughput ratios flare/peer
((a)/(b) and (c)/(d); the goal is >= 0.8). Run from the repository root:

    .venv/bin/python benchmarks/codec.py            # 15 interleaved repeats of ~0.15 s
    .venv/bin/python benchmarks/codec.py --quick    # a quick smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import orjson

from flare_proto import (
    Compression,
    Format,
    Frame,
    Reliability,
    decode_frame,
    encode_frame,
    message_frame,
)

PAYLOAD = bytes((i * 37 + 11) % 256 for i in range(256))
AT_LEAST_ONCE = Reliability.AT_LEAST_ONCE
MESSAGE_ID = "1730000000000-0000000000000001"
SEND_ID = "m-1730000000000-42"
TIMESTAMP = 1730000000000
SEND = 0  # MessageCommand.Type SEND


def build() -> Frame:
    """A SEND frame built with the plain generated classes (shared by (a), (b), (c))."""
    frame = Frame(message_id=MESSAGE_ID, reliability=AT_LEAST_ONCE, timestamp=TIMESTAMP)
    message = frame.command.message
    message.message_id = SEND_ID
    message.payload = PAYLOAD
    return frame


def flare_build() -> Frame:
    """The same SEND through flare's own builder (what an application calls)."""
    return message_frame(
        SEND, message_id=MESSAGE_ID, command_id=SEND_ID, timestamp=TIMESTAMP, payload=PAYLOAD
    )


def flare_protobuf() -> tuple[bytes, str]:
    data = encode_frame(flare_build(), Format.PROTOBUF)
    frame, _, _ = decode_frame(data)
    message = frame.command.message
    return message.payload, message.message_id


def bare_upb() -> tuple[bytes, str]:
    data = build().SerializeToString()
    frame = Frame.FromString(data)
    message = frame.command.message
    return message.payload, message.message_id


def flare_json() -> tuple[bytes, str]:
    data = encode_frame(flare_build(), Format.JSON)
    frame, _, _ = decode_frame(data)
    message = frame.command.message
    return message.payload, message.message_id


def orjson_dict() -> tuple[bytes, str]:
    obj = {
        "command": {
            "type": {
                "message": {
                    "type": 0,
                    "message_id": SEND_ID,
                    "payload": list(PAYLOAD),
                    "metadata": {},
                    "seq": 0,
                }
            }
        },
        "message_id": MESSAGE_ID,
        "reliability": 1,
        "timestamp": TIMESTAMP,
        "metadata": {},
    }
    parsed = orjson.loads(orjson.dumps(obj))
    message = parsed["command"]["type"]["message"]
    return bytes(message["payload"]), message["message_id"]


def flare_protobuf_zstd() -> tuple[bytes, str]:
    data = encode_frame(build(), Format.PROTOBUF, Compression.ZSTD)
    frame, _, _ = decode_frame(data)
    message = frame.command.message
    return message.payload, message.message_id


def flare_protobuf_gzip() -> tuple[bytes, str]:
    data = encode_frame(build(), Format.PROTOBUF, Compression.GZIP)
    frame, _, _ = decode_frame(data)
    message = frame.command.message
    return message.payload, message.message_id


CASES: list[tuple[str, Callable[[], tuple[bytes, str]]]] = [
    ("(a) flare protobuf", flare_protobuf),
    ("(b) bare upb", bare_upb),
    ("(c) flare JSON", flare_json),
    ("(d) orjson dict", orjson_dict),
    ("flare protobuf + zstd", flare_protobuf_zstd),
    ("flare protobuf + gzip", flare_protobuf_gzip),
]


def calibrate(fn: Callable[[], object], target_seconds: float) -> int:
    """Number of calls that takes about ``target_seconds``."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= target_seconds / 4:
            return max(1, int(loops * target_seconds / elapsed))
        loops *= 2


def measure(repeats: int, target_seconds: float) -> dict[str, list[float]]:
    """ns per call of every case, ``repeats`` samples each.

    The repeats are interleaved (case 1, case 2, ..., case 1, ...) so that a change in
    machine load hits every case alike and the per-repeat ratios stay meaningful.
    """
    loops = {name: calibrate(fn, target_seconds) for name, fn in CASES}
    samples: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for _ in range(repeats):
        for name, fn in CASES:
            count = loops[name]
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count * 1e9)
    return samples


def check() -> None:
    """Every case must read back the same payload and id."""
    for name, fn in CASES:
        if fn() != (PAYLOAD, SEND_ID):
            raise SystemExit(f"{name} read back the wrong values")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 short repeats")
    args = parser.parse_args()
    repeats, target = (3, 0.05) if args.quick else (15, 0.15)
    check()
    print(f"Python {platform.python_version()}, {repeats} interleaved repeats, medians")
    print(f"{'case':<24}{'ns/op':>10}{'ops/s':>12}")
    samples = measure(repeats, target)
    for name, _ in CASES:
        ns = statistics.median(samples[name])
        print(f"{name:<24}{ns:>10.0f}{1e9 / ns:>12,.0f}")
    for label, flare, peer in (
        ("flare protobuf / bare upb", "(a) flare protobuf", "(b) bare upb"),
        ("flare JSON / orjson dict", "(c) flare JSON", "(d) orjson dict"),
    ):
        # Throughput ratio = peer time / flare time, per repeat, then the median.
        ratios = [p / f for f, p in zip(samples[flare], samples[peer], strict=True)]
        print(f"throughput ratio {label:<28}{statistics.median(ratios):.2f}  (goal >= 0.8)")


if __name__ == "__main__":
    main()
