"""The client/server state machine model (flare_proto.testing.model) against the core.

``FLARE_MODEL_EXAMPLES=5000 pytest tests/test_model.py`` runs a longer search.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

from flare_proto import ServerConnection, ServerState
from flare_proto.testing.model import ConnectionPairModel, ModelViolation, run_model

_EXAMPLES = int(os.environ.get("FLARE_MODEL_EXAMPLES", "400"))


class TestConnectionPairModel(ConnectionPairModel.TestCase):  # type: ignore[misc,valid-type]
    settings = settings(
        max_examples=_EXAMPLES,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_model_catches_a_planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model has teeth: a server that lets held frames through before the verdict
    (DESIGN §3.4) is caught by invariant 3."""
    original = ServerConnection._on_frame

    def leaky(self: ServerConnection, frame: object, fmt: object, now: float) -> None:
        if self.state is ServerState.AWAITING_VERDICT:
            self._dispatch(frame, now)  # type: ignore[arg-type]
        else:
            original(self, frame, fmt, now)  # type: ignore[arg-type]

    monkeypatch.setattr(ServerConnection, "_on_frame", leaky)
    quick = settings(
        max_examples=1_000,
        stateful_step_count=30,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    with pytest.raises(ModelViolation, match="before accept"):
        run_model(quick)


def test_cut_stream_with_a_partial_frame_is_not_a_disagreement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by CI: garbage leaves a partial length prefix on the server, then the client's
    transport ends. The server closes with ``protocol_error`` (stream ended inside a frame)
    that can no longer reach the client; the model must not call that a disagreement."""
    from flare_proto import CloseCode, Compression, Format, Framing
    from flare_proto.testing import model

    monkeypatch.setattr(model, "event", lambda _: None)
    state = ConnectionPairModel()
    state.setup(
        framing=Framing.STREAM,
        fmt=Format.PROTOBUF,
        compression=Compression.NONE,
        force=False,
        compress_min=0,
        prefer="client",
        max_frame=10485760,
        max_held=2,
        prompt_acks=True,
        start="accept",
    )
    state.client_send(sends=[("send", b"", None)])
    state.inject_garbage(data=b"\x00", prefixed=False, to_server=True)
    state.disconnect(code=CloseCode.AUTH_FAILED, how="eof", number=None, to_server=False)
    state.events_are_consistent()
    assert state.pair.server.closed
    state.teardown()
