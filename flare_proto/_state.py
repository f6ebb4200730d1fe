"""Connection states and their legal transitions, as data.

Theory of operation: a connection moves through a handful of states driven by a few
protocol inputs. The tables below are the whole story; the connection classes only call
:func:`transition`, which raises ``RuntimeError`` for an illegal pair (an internal bug, never
a peer's doing: peer violations are handled before a transition is attempted).

Client: IDLE --connect--> AWAITING_ACK --connect_ack--> OPEN; any --close--> CLOSED.
Server: AWAITING_CONNECT --connect--> AWAITING_VERDICT --accept--> OPEN; any --close--> CLOSED.
"""

from __future__ import annotations

import enum
from typing import TypeVar


class ClientState(enum.Enum):
    """States of :class:`~flare_proto.ClientConnection`."""

    IDLE = "idle"
    AWAITING_ACK = "awaiting_ack"
    OPEN = "open"
    CLOSED = "closed"


class ServerState(enum.Enum):
    """States of :class:`~flare_proto.ServerConnection`."""

    AWAITING_CONNECT = "awaiting_connect"
    AWAITING_VERDICT = "awaiting_verdict"
    OPEN = "open"
    CLOSED = "closed"


CLIENT_TRANSITIONS: dict[tuple[ClientState, str], ClientState] = {
    (ClientState.IDLE, "connect"): ClientState.AWAITING_ACK,
    (ClientState.AWAITING_ACK, "connect_ack"): ClientState.OPEN,
    (ClientState.IDLE, "close"): ClientState.CLOSED,
    (ClientState.AWAITING_ACK, "close"): ClientState.CLOSED,
    (ClientState.OPEN, "close"): ClientState.CLOSED,
}

SERVER_TRANSITIONS: dict[tuple[ServerState, str], ServerState] = {
    (ServerState.AWAITING_CONNECT, "connect"): ServerState.AWAITING_VERDICT,
    (ServerState.AWAITING_VERDICT, "accept"): ServerState.OPEN,
    (ServerState.AWAITING_CONNECT, "close"): ServerState.CLOSED,
    (ServerState.AWAITING_VERDICT, "close"): ServerState.CLOSED,
    (ServerState.OPEN, "close"): ServerState.CLOSED,
}

S = TypeVar("S", ClientState, ServerState)


def transition(table: dict[tuple[S, str], S], state: S, event: str) -> S:
    """The state after ``event`` in ``state``; ``RuntimeError`` if the table forbids it."""
    try:
        return table[(state, event)]
    except KeyError:
        raise RuntimeError(f"illegal transition: {event!r} in {state.name}") from None
