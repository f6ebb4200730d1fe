"""flare_drivers: anyio drivers binding the flare sans-IO core to real networks.

WebSocket (ws/wss, via wsproto) and QUIC (via aioquic) transports, the server
:class:`Hub` shared by every listener, :func:`serve`, the racing and reconnecting
:class:`Client`, and the ``flare`` command line. Runs on asyncio and trio.
"""

from ._client import (
    Client,
    ClientClosed,
    ClientEvent,
    ConnectionState,
    SendFailed,
    StateChanged,
)
from ._hub import (
    Accept,
    Authenticator,
    Connection,
    Hub,
    Reject,
    chat_message,
    install_chat_room,
)
from ._loop import ConnectionDriver
from ._quic import QuicTransport, connect_quic, serve_quic
from ._race import BrokenTransports, RaceFailed, race
from ._router import Router
from ._serve import Listener, ListenerKind, serve
from ._transport import Transport, TransportClosed
from ._websocket import (
    WebSocketHandshakeError,
    WebSocketTransport,
    connect_websocket,
    serve_websocket,
)

__all__ = [
    "Accept",
    "Authenticator",
    "BrokenTransports",
    "Client",
    "ClientClosed",
    "ClientEvent",
    "Connection",
    "ConnectionDriver",
    "ConnectionState",
    "Hub",
    "Listener",
    "ListenerKind",
    "QuicTransport",
    "RaceFailed",
    "Reject",
    "Router",
    "SendFailed",
    "StateChanged",
    "Transport",
    "TransportClosed",
    "WebSocketHandshakeError",
    "WebSocketTransport",
    "chat_message",
    "connect_quic",
    "connect_websocket",
    "install_chat_room",
    "race",
    "serve",
    "serve_quic",
    "serve_websocket",
]
