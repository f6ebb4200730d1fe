"""anyio drivers for flare (WebSocket, QUIC, server hub, racing client). Not yet implemented."""

__all__: list[str] = []
