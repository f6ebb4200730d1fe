"""Test helpers for flare users (need ``hypothesis``): strategies for frames and garbage,
the in-memory :class:`Loopback` pair, and :class:`ConnectionPairModel`, the state-machine
model of a client/server pair (:func:`run_model` runs it).

Not imported by ``flare_proto`` itself; import ``flare_proto.testing`` from test code only.
"""

from __future__ import annotations

from .loopback import Loopback
from .model import ConnectionPairModel, ModelViolation, run_model
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
    "ConnectionPairModel",
    "Loopback",
    "ModelViolation",
    "commands",
    "compressions",
    "forged_frames",
    "formats",
    "frames",
    "garbage",
    "payloads",
    "run_model",
    "texts",
]
