"""Where the time of P2 goes: flare's JSON round trip against the orjson dict, step by step.

The goal P2 (flare JSON ≥ 0.8× an orjson serde-shape round trip) asks flare, whose frames
are upb ``Frame`` messages, to keep up with a peer that never builds a message object. This
script times every step of both paths on the same 256 B SEND, and a *floor*: flare's path
with every check removed (only the reads of the upb fields and the writes of a new upb
message that any upb-based JSON codec must do). Its ratio is the best any such codec can
reach on this machine. Prints µs per step (minimum of several timings: the steps are tiny
and the minimum is their cost without interference).

    .venv/bin/python benchmarks/json_profile.py
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import codec
import orjson

from flare_proto import Format, Frame, decode_frame, encode_frame
from flare_proto._json import frame_from_json, frame_to_json

FRAME = codec.flare_build()
DATA = encode_frame(FRAME, Format.JSON)
OBJ = orjson.loads(DATA)


def peer_build() -> dict[str, object]:
    """The peer's first step: its serde-shape dict, payload as a list of integers."""
    return {
        "command": {
            "type": {
                "message": {
                    "type": 0,
                    "message_id": codec.SEND_ID,
                    "payload": list(codec.PAYLOAD),
                    "metadata": {},
                    "seq": 0,
                }
            }
        },
        "message_id": codec.MESSAGE_ID,
        "reliability": 1,
        "timestamp": codec.TIMESTAMP,
        "metadata": {},
    }


def floor_encode(frame: Frame) -> bytes:
    """The reads any upb → serde-shape encoder must do, and nothing else."""
    m = frame.command.message
    return orjson.dumps(
        {
            "command": {
                "type": {
                    "message": {
                        "type": m.type,
                        "message_id": m.message_id,
                        "payload": list(m.payload),
                        "metadata": {},
                        "seq": m.seq,
                    }
                }
            },
            "message_id": frame.message_id,
            "reliability": frame.reliability,
            "timestamp": frame.timestamp,
            "metadata": {},
        }
    )


def floor_decode(data: bytes) -> Frame:
    """The writes any serde-shape → upb decoder must do, with no type check at all."""
    obj = orjson.loads(data)
    body = obj["command"]["type"]["message"]
    frame = Frame()
    m = frame.command.message
    m.type = body["type"]
    m.message_id = body["message_id"]
    m.payload = bytes(bytearray(body["payload"]))
    m.seq = body["seq"]
    frame.message_id = obj["message_id"]
    frame.reliability = obj["reliability"]
    frame.timestamp = obj["timestamp"]
    return frame


def read(frame: Frame) -> tuple[bytes, str]:
    m = frame.command.message
    return m.payload, m.message_id


def floor_round_trip() -> tuple[bytes, str]:
    return read(floor_decode(floor_encode(codec.flare_build())))


STEPS: list[tuple[str, Callable[[], object]]] = [
    ("flare: build the upb Frame (message_frame)", codec.flare_build),
    ("flare: frame_to_json", lambda: frame_to_json(FRAME)),
    ("  of which list(payload)", lambda: list(codec.PAYLOAD)),
    ("  of which orjson.dumps of the finished dict", lambda: orjson.dumps(OBJ)),
    (
        "flare: encode_frame(JSON) (adds the format/compression checks)",
        lambda: encode_frame(FRAME, Format.JSON),
    ),
    ("flare: frame_from_json", lambda: frame_from_json(DATA)),
    ("  of which orjson.loads", lambda: orjson.loads(DATA)),
    (
        "  of which bytes(bytearray(payload list))",
        lambda: bytes(bytearray(OBJ["command"]["type"]["message"]["payload"])),
    ),
    ("flare: decode_frame (adds detection, size limit)", lambda: decode_frame(DATA)),
    ("flare: read payload + id from the Frame", lambda: read(FRAME)),
    ("flare: whole round trip (P2's flare side)", codec.flare_json),
    ("floor: unchecked upb reads + dumps", lambda: floor_encode(FRAME)),
    ("floor: loads + unchecked upb writes", lambda: floor_decode(DATA)),
    ("floor: whole round trip", floor_round_trip),
    ("peer: build the dict (incl. list(payload))", lambda: peer_build()),
    ("peer: whole round trip (P2's peer)", codec.orjson_dict),
]


def cost(fn: Callable[[], object], number: int = 20000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main() -> None:
    results = {name: cost(fn) for name, fn in STEPS}
    for name, us in results.items():
        print(f"{name:<66}{us:8.2f} µs")
    peer = results["peer: whole round trip (P2's peer)"]
    flare = results["flare: whole round trip (P2's flare side)"]
    floor = results["floor: whole round trip"]
    print(f"\nratio flare / peer  {peer / flare:.2f}   (goal 0.8)")
    print(f"ratio floor / peer  {peer / floor:.2f}   (the best an upb-based codec can reach)")


if __name__ == "__main__":
    main()
