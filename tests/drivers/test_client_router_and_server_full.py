"""Two driver paths of issue 3 on loopback, asyncio and trio: the client's handlers by
custom-command name (the original's message router, on the client side) and the hub's
``max_connections`` over QUIC when served through :func:`flare_drivers.serve`."""

from __future__ import annotations

from typing import Any, Literal

import anyio
import pytest

from flare_drivers._client import Client, ClientClosed
from flare_drivers._hub import Connection, Hub, install_chat_room
from flare_proto import CloseCode, CommandKind, Frame, custom_frame

from .hubtools import running, url, wait_for

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"backoff_base": 0.05, "backoff_cap": 0.2, "quic_verify": False}
Kind = Literal["ws", "quic"]


@pytest.mark.parametrize("kind", ["ws", "quic"])
async def test_client_handler_by_custom_command_name(kind: Kind) -> None:
    """``client.router.on_custom("echo")`` receives the CustomCommand the chat room's
    ``echo`` returns (name, data and metadata intact), with the client as its target; a
    custom command with another name goes to the CUSTOM kind handler, not to ``echo``'s."""
    hub = Hub()
    install_chat_room(hub)

    @hub.router.on_custom("ask")
    async def answer(conn: Connection, frame: Frame) -> None:
        data = frame.command.custom.data
        conn.send_frame(custom_frame("answer", message_id="a-1", timestamp=1, data=data[::-1]))

    echoed: list[tuple[object, Frame]] = []
    others: list[Frame] = []
    got_echo, got_other = anyio.Event(), anyio.Event()
    with anyio.fail_after(10):
        async with running(hub, [kind]) as bound:
            client = Client([url(bound, kind)], **FAST)

            @client.router.on_custom("echo")
            async def on_echo(target: Client, frame: Frame) -> None:
                echoed.append((target, frame))
                got_echo.set()

            @client.router.on(CommandKind.CUSTOM)
            async def on_custom(target: Client, frame: Frame) -> None:
                others.append(frame)
                got_other.set()

            async with client:
                await client.send_custom("echo", b"\x00ping\xff", metadata={"k": "v"})
                await got_echo.wait()
                await client.send_custom("ask", b"abc")
                await got_other.wait()

    ((target, frame),) = echoed
    assert target is client
    custom = frame.command.custom
    assert (custom.name, custom.data) == ("echo", b"\x00ping\xff")
    assert dict(custom.metadata) == {"k": b"v"}
    assert [(f.command.custom.name, f.command.custom.data) for f in others] == [("answer", b"cba")]


async def test_max_connections_over_quic_through_serve() -> None:
    """``Hub(max_connections=1)`` served by :func:`flare_drivers.serve` on QUIC (the hub's
    limit, not ``serve_quic``'s own): a second QUIC client is closed with ``server_full``
    (4009, a code that allows reconnecting); once the first has gone, a new one gets in."""
    hub = Hub(max_connections=1)  # hubtools.running serves it with flare_drivers.serve
    with anyio.fail_after(15):
        async with running(hub, ["quic"]) as bound:
            address = url(bound, "quic")
            first = Client([address], **FAST)
            extra = Client([address], reconnect=False, **FAST)
            async with first:
                await first.wait_connected()
                async with extra:
                    with pytest.raises(ClientClosed, match="server_full"):
                        await extra.wait_connected()
                assert extra.close_code is CloseCode.SERVER_FULL
                assert extra.close_code.reconnect
                assert len(hub.connections) == 1  # the refused one never entered the table
                await first.send(b"still served")
            await wait_for(lambda: not hub.connections)
            late = Client([address], reconnect=False, **FAST)
            async with late:
                await late.wait_connected()
                assert late.close_code is None
