"""Accepting a connection together with its device-conflict consequences (DESIGN §3.5-3.6).

The only place where connections meet: after the authenticator said yes, the registry
decides on the **authenticated** user id (B1, B2) whom to displace; each displaced
connection gets KICKED in its own encoding and is closed; then the new connection gets its
CONNECT_ACK listing the kicked ids. Kicks go out before the ACK, as in the original.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._devices import DeviceRegistry, kick_notice
from ._errors import LocalProtocolError
from ._server import ServerConnection
from ._state import ServerState


def admit(
    connection: ServerConnection,
    registry: DeviceRegistry,
    connections: Mapping[str, ServerConnection],
    now: float,
    *,
    user_id: str | None,
) -> list[ServerConnection]:
    """Accept ``connection`` as ``user_id``, kicking the devices the registry's strategy
    says conflict. ``connections`` maps connection ids to live connections. Returns the
    kicked connections: flush their ``data_to_send()`` and close their transports, then
    flush ``connection``'s. Without a user id there is nothing to conflict with.
    """
    if connection.state is not ServerState.AWAITING_VERDICT:
        # Refuse before the registry or anyone else is touched (misuse changes nothing).
        raise LocalProtocolError(
            f"admit() needs a pending CONNECT, state is {connection.state.name}"
        )
    request = connection.request
    device = None if request is None else request.device
    kicked: list[ServerConnection] = []
    if user_id:  # the registry groups by user; anonymous connections never conflict
        for conflict in registry.admit(connection.connection_id, user_id, device):
            old = connections.get(conflict.connection_id)
            if old is None or old.closed:
                continue
            message, metadata = kick_notice(user_id, device, conflict.platform)
            old.kick(now, message=message, metadata=metadata)
            kicked.append(old)
    connection.accept(
        now, user_id=user_id, conflict_connections=[old.connection_id for old in kicked]
    )
    return kicked
