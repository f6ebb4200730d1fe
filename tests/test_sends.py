"""SEND tracking on the client: ACKs, ack timeouts, resend after reconnect, order
(DESIGN §5, §6; bug B19)."""

from __future__ import annotations

import pytest

from flare_proto import (
    AckTimedOut,
    ClientConfig,
    ClientConnection,
    CommandKind,
    FrameReceived,
    Framing,
    LocalProtocolError,
    MessageAcked,
    message_frame,
)
from flare_proto.testing.loopback import Loopback


def received(pair: Loopback) -> list[FrameReceived]:
    return [e for e in pair.server_events if isinstance(e, FrameReceived)]


def test_send_is_acked_after_server_handles_it(framing: Framing) -> None:
    pair = Loopback(framing=framing)
    pair.connect()
    ident = pair.client.send_message(b"hello", pair.now, metadata={"room": "1"})
    pair.pump()
    (event,) = received(pair)
    assert event.kind is CommandKind.SEND
    assert event.frame.command.message.payload == b"hello"
    assert event.frame.command.message.metadata["room"] == b"1"
    assert pair.client.pending_sends() != []
    pair.server.send_ack(event.frame.command.message.message_id, pair.now)
    pair.pump()
    assert MessageAcked(message_id=ident) in pair.client_events
    assert pair.client.pending_sends() == []


def test_ack_timeout_reports_and_forgets() -> None:
    pair = Loopback(ClientConfig(ack_timeout=5.0))
    pair.connect()
    ident = pair.client.send_message(b"lost", pair.now)
    pair.advance(4.9)
    assert not any(isinstance(e, AckTimedOut) for e in pair.client_events)
    pair.advance(0.1)
    (timed_out,) = [e for e in pair.client_events if isinstance(e, AckTimedOut)]
    assert timed_out.message_id == ident
    assert pair.client.pending_sends() == []
    # A late ACK for it is ignored.
    pair.server.send_ack(ident, pair.now)
    pair.pump()
    assert not any(isinstance(e, MessageAcked) for e in pair.client_events)


def test_duplicate_pending_id_is_refused() -> None:
    pair = Loopback()
    pair.connect()
    pair.client.send_message(b"a", pair.now, message_id="same")
    with pytest.raises(LocalProtocolError):
        pair.client.send_message(b"b", pair.now, message_id="same")


def test_data_is_not_tracked() -> None:
    pair = Loopback()
    pair.connect()
    pair.client.send_data(b"d", pair.now)
    pair.client.send_custom("typing", b"{}", pair.now)
    pair.pump()
    assert pair.client.pending_sends() == []
    assert [e.kind for e in received(pair)] == [CommandKind.DATA, CommandKind.CUSTOM]


def test_resend_after_reconnect_keeps_ids(framing: Framing) -> None:
    first = Loopback(framing=framing)
    first.connect()
    ids = [first.client.send_message(bytes([i]), first.now) for i in range(3)]
    first.pump()
    first.server.send_ack(ids[0], first.now)
    first.pump()
    first.client.close(first.now)
    leftover = first.client.pending_sends()
    assert [f.message_id for f in leftover] == ids[1:]

    second = Loopback(framing=framing)
    second.client = ClientConnection(
        ClientConfig(), ids=second.ids, framing=framing, resend=leftover
    )
    second._client.conn = second.client
    second.connect()
    got = [e.frame.message_id for e in received(second)]
    assert got == ids[1:]
    for ident in got:
        second.server.send_ack(ident, second.now)
    second.pump()
    assert [e.message_id for e in second.client_events if isinstance(e, MessageAcked)] == ids[1:]


def test_b19_per_connection_order_is_kept(framing: Framing) -> None:
    pair = Loopback(framing=framing)
    pair.connect()
    sent = [pair.client.send_message(str(i).encode(), pair.now) for i in range(50)]
    pair.pump()
    assert [e.frame.message_id for e in received(pair)] == sent


def test_server_to_client_push_and_custom() -> None:
    pair = Loopback()
    pair.connect()
    pair.server.send_message(b"push", pair.now, metadata={"from": "bob"})
    pair.server.send_frame(message_frame(2, message_id="d1", timestamp=1, payload=b"x"), pair.now)
    pair.pump()
    kinds = [e.kind for e in pair.client_events if isinstance(e, FrameReceived)]
    assert kinds == [CommandKind.SEND, CommandKind.DATA]
