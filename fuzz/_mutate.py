"""Byte-level mutations in the style of libFuzzer's, for the random-mutation engine.

Each call applies 1, 2, 4 or 8 stacked mutations chosen uniformly from: flip a bit, set a
random byte, set an "interesting" byte, add to a byte, insert random bytes, delete a range,
copy a range elsewhere, insert or overwrite a dictionary token, splice with another corpus
entry, overwrite 1/2/4 bytes with an interesting big-endian number, truncate. There is no
coverage feedback: the corpus stays the seeds (see README, "Engines").
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["mutate"]

# Bytes that mean something here: small numbers, protobuf tags, JSON punctuation, magics.
_BYTES = (
    b"\x00\x01\x02\x03\x04\x07\x08\x0a\x12\x1f\x20\x22\x28\x2a\x2c\x3a"
    b"[]{}\x7f\x80\x8b\xb5\xfd\xfe\xff"
)
# Lengths around the harnesses' limits (1, 64, 512, 1024, 4096, 64 Ki) and integer edges.
# fmt: off
_NUMBERS = (
    0, 1, 2, 3, 4, 16, 63, 64, 65, 127, 128, 255, 256, 511, 512, 513, 1023, 1024, 1025,
    4095, 4096, 4097, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x10001, 0x7FFFFFFF, 0x80000000,
    0xFFFFFFFF,
)
# fmt: on


def _one(
    rng: random.Random, buf: bytearray, corpus: Sequence[bytes], tokens: Sequence[bytes]
) -> None:
    size = len(buf)
    op = rng.randrange(12)
    if size == 0 and op not in (4, 6, 8):
        op = 4
    if op == 0:
        buf[rng.randrange(size)] ^= 1 << rng.randrange(8)
    elif op == 1:
        buf[rng.randrange(size)] = rng.randrange(256)
    elif op == 2:
        buf[rng.randrange(size)] = rng.choice(_BYTES)
    elif op == 3:
        index = rng.randrange(size)
        buf[index] = (buf[index] + rng.randint(-35, 35)) & 0xFF
    elif op == 4:
        at = rng.randint(0, size)
        buf[at:at] = rng.randbytes(rng.randint(1, 8))
    elif op == 5:
        start = rng.randrange(size)
        del buf[start : start + rng.randint(1, max(1, min(64, size - start)))]
    elif op == 6 and tokens:
        at = rng.randint(0, size)
        buf[at:at] = rng.choice(tokens)
    elif op == 7 and tokens:
        token = rng.choice(tokens)
        at = rng.randrange(size)
        buf[at : at + len(token)] = token
    elif op == 8 and corpus:
        other = rng.choice(corpus)
        cut = rng.randint(0, size)
        buf[cut:] = other[rng.randint(0, len(other)) :]
    elif op == 9:
        width = rng.choice((1, 2, 4))
        value = rng.choice(_NUMBERS) & ((1 << (8 * width)) - 1)
        at = rng.randrange(size)
        buf[at : at + width] = value.to_bytes(width, "big")
    elif op == 10:
        start = rng.randrange(size)
        length = rng.randint(1, min(64, size - start))
        chunk = bytes(buf[start : start + length])
        at = rng.randint(0, size)
        buf[at:at] = chunk
    else:
        del buf[rng.randint(0, size) :]


def mutate(
    rng: random.Random,
    data: bytes,
    corpus: Sequence[bytes],
    tokens: Sequence[bytes],
    max_len: int,
) -> bytes:
    """``data`` after 1-8 stacked random mutations, cut to ``max_len`` bytes."""
    buf = bytearray(data)
    for _ in range(1 << rng.randrange(4)):
        _one(rng, buf, corpus, tokens)
    return bytes(buf[:max_len])
