"""The core's hot paths (benchmarks/p_throughput.py) keep the wire exactly as before: the
server's reused ACK frame, the inlined protobuf decode, the client's inlined ACK match."""

from __future__ import annotations

import pytest

from flare_proto import (
    ClientConfig,
    CloseCode,
    ConnectionClosed,
    Format,
    FrameReceived,
    FrameRejected,
    Framing,
    MessageAcked,
    decode_frame,
    encode_frame,
    message_frame,
)
from flare_proto._frames import ACK
from flare_proto.testing.loopback import Loopback


@pytest.mark.parametrize("fmt", [Format.PROTOBUF, Format.JSON])
def test_reused_ack_frame_gives_the_bytes_of_a_fresh_one(fmt: Format) -> None:
    pair = Loopback(ClientConfig(format=fmt))
    pair.connect()
    sent = [pair.client.send_message(b"x%d" % i, pair.now) for i in range(3)]
    pair.pump()
    before = len(pair.server_sent)
    ids = pair.ids
    expected = []
    for ident in [*sent, ""]:  # an empty id is omitted on the wire, as in a fresh frame
        counter = ids._messages
        pair.server.send_ack(ident, pair.now)
        fresh = message_frame(
            ACK,
            message_id=f"{ids.timestamp_ms(pair.now)}-{counter:016x}",
            command_id=ident,
            timestamp=ids.timestamp_ms(pair.now),
        )
        expected.append(encode_frame(fresh, fmt))
    pair.pump()
    assert pair.server_sent[before:] == expected
    acked = [e.message_id for e in pair.client_events if isinstance(e, MessageAcked)]
    assert acked == sent
    # Each ACK decodes on its own: no state leaks from one to the next.
    frames = [decode_frame(data)[0] for data in expected]
    assert [f.command.message.message_id for f in frames] == [*sent, ""]
    assert len({f.message_id for f in frames}) == len(frames)


def test_ack_by_frame_id_still_matches() -> None:
    """An ACK whose MessageCommand id is empty refers to its frame id (DESIGN §5)."""
    pair = Loopback()
    pair.connect()
    ident = pair.client.send_message(b"x", pair.now)
    pair.pump()
    ack = message_frame(ACK, message_id=ident, command_id="", timestamp=0)
    pair.server.send_frame(ack, pair.now)
    pair.pump()
    assert MessageAcked(message_id=ident) in pair.client_events


def test_undecodable_protobuf_on_the_fast_path(framing: Framing) -> None:
    """A payload that looks like protobuf (first byte) but is not: dropped with
    FrameRejected; a run of them closes with protocol_error (DESIGN §4)."""
    pair = Loopback(framing=framing)
    pair.connect()
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length running past the end
    if framing is Framing.STREAM:
        garbage = len(garbage).to_bytes(4, "big") + garbage
    pair.inject(garbage)
    assert isinstance(pair.server_events[-1], FrameRejected)
    assert not pair.server.closed
    pair.client.send_message(b"fine", pair.now)
    pair.pump()
    assert isinstance(pair.server_events[-1], FrameReceived)
    for _ in range(8):
        pair.inject(garbage)
    closed = [e for e in pair.server_events if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].code is CloseCode.PROTOCOL_ERROR
