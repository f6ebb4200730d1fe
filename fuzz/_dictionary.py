"""Read ``flare.dict``, the libFuzzer dictionary, for the random-mutation engine."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["DICTIONARY_PATH", "tokens"]

DICTIONARY_PATH = Path(__file__).resolve().parent / "flare.dict"
"""The dictionary file, in libFuzzer's format (``name="value"`` lines, ``\\xNN`` escapes)."""


def _unescape(text: str) -> bytes:
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if following == "x" and index + 3 < len(text):
                out.append(int(text[index + 2 : index + 4], 16))
                index += 4
                continue
            out += following.encode()
            index += 2
            continue
        out += char.encode()
        index += 1
    return bytes(out)


@functools.cache
def tokens() -> tuple[bytes, ...]:
    """Every token of the dictionary (empty if the file is missing)."""
    if not DICTIONARY_PATH.exists():
        return ()
    out: list[bytes] = []
    for line in DICTIONARY_PATH.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        start, end = line.find('"'), line.rfind('"')
        if 0 <= start < end:
            out.append(_unescape(line[start + 1 : end]))
    return tuple(out)
