"""Shared fixtures: loopback pairs on a fake clock."""

from __future__ import annotations

import pytest

from flare_proto import Framing


@pytest.fixture(params=[Framing.MESSAGE, Framing.STREAM], ids=["message", "stream"])
def framing(request: pytest.FixtureRequest) -> Framing:
    """Run a test over both transport framings (WebSocket-like and QUIC-like)."""
    value: Framing = request.param
    return value
