"""Shared fixtures: loopback pairs on a fake clock."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from flare_proto import Framing

# CI runs every property test on a fixed seed, so a red run is reproducible and a landing
# never depends on luck; local runs stay random and keep searching (decisions.md).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(params=[Framing.MESSAGE, Framing.STREAM], ids=["message", "stream"])
def framing(request: pytest.FixtureRequest) -> Framing:
    """Run a test over both transport framings (WebSocket-like and QUIC-like)."""
    value: Framing = request.param
    return value
