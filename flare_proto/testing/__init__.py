"""Test helpers for flare users: hypothesis strategies for frames (needs ``hypothesis``).

Not imported by ``flare_proto`` itself; import ``flare_proto.testing`` from test code only.
"""

from __future__ import annotations

from .strategies import (
    commands,
    compressions,
    forged_frames,
    formats,
    frames,
    garbage,
    payloads,
    texts,
)

__all__ = [
    "commands",
    "compressions",
    "forged_frames",
    "formats",
    "frames",
    "garbage",
    "payloads",
    "texts",
]
