"""The ``flare`` command: ``flare serve`` and ``flare connect`` exactly as DESIGN §7.

``flare serve`` prints one JSON line naming every bound address on stdout once all
listeners are up (test harnesses read it: keep its format), then logs to stderr.
``flare connect`` sends each stdin line as a SEND and prints everything it receives as one
JSON line each on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio

from flare_proto import (
    ClientConfig,
    Compression,
    ConnectRequest,
    DeviceInfo,
    Format,
    FrameReceived,
    Kicked,
    Limits,
    Platform,
    ServerConfig,
    strategy_from_name,
)
from flare_proto._devices import STRATEGY_NAMES

from ._client import Client, ClientClosed, SendFailed, StateChanged
from ._hub import Accept, Authenticator, Hub, Reject, install_chat_room
from ._serve import Listener, ListenerKind, ListenError, serve

log = logging.getLogger("flare")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r} (port 0-65535)")
    return host.strip("[]") or "127.0.0.1", int(port)


def _url(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    host, colon, port = rest.partition("/")[0].rpartition(":")
    if (
        not sep
        or scheme.lower() not in ("ws", "wss", "quic")
        or not (colon and host and port.isdigit())
    ):
        raise argparse.ArgumentTypeError(
            f"expected ws://HOST:PORT, wss://HOST:PORT or quic://HOST:PORT, got {text!r}"
        )
    return text


def _format(text: str) -> Format:
    value = Format.parse(text)
    if value is None:
        raise argparse.ArgumentTypeError("format must be protobuf or json")
    return value


def _compression(text: str) -> Compression:
    value = Compression.parse(text)
    if value is None:
        raise argparse.ArgumentTypeError("compression must be none, gzip or zstd")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _bytes(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a number of bytes > 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``flare`` (both subcommands)."""
    parser = argparse.ArgumentParser(prog="flare", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run a chat-room server (WS 8080 + QUIC 8081 by default)")
    s.add_argument("--ws", type=_address, metavar="HOST:PORT")
    s.add_argument("--wss", type=_address, metavar="HOST:PORT")
    s.add_argument("--quic", type=_address, metavar="HOST:PORT")
    s.add_argument("--cert", help="PEM certificate (wss; QUIC uses a generated one without)")
    s.add_argument("--key", help="PEM private key")
    s.add_argument("--tokens", help="JSON file {token: user_id}; turns authentication on")
    s.add_argument("--devices", default="allow-all", choices=STRATEGY_NAMES)
    s.add_argument("--format", type=_format, default=Format.PROTOBUF, help="server default")
    s.add_argument("--compression", type=_compression, default=Compression.NONE)
    s.add_argument("--prefer", choices=("client", "server"), default="client")
    s.add_argument(
        "--heartbeat-timeout",
        type=_seconds,
        default=90.0,
        help="clients' heartbeat timeout; QUIC idle timeout is set above it",
    )
    s.add_argument("--idle-timeout", type=_seconds, default=300.0)
    s.add_argument("--auth-timeout", type=_seconds, default=30.0)
    s.add_argument("--max-frame", type=_bytes, default=Limits().max_frame)

    c = sub.add_parser("connect", help="connect, send stdin lines, print what arrives")
    c.add_argument(
        "urls", nargs="+", type=_url, metavar="URL", help="ws://, wss:// or quic:// (raced)"
    )
    c.add_argument("--token")
    c.add_argument("--user")
    c.add_argument("--device-id")
    c.add_argument("--platform", help="with --device-id (default pc)")
    c.add_argument("--format", type=_format, default=Format.JSON)
    c.add_argument("--compression", type=_compression, default=Compression.NONE)
    c.add_argument("--force", action="store_true")
    c.add_argument("--cafile", help="PEM CA to trust for wss/quic")
    c.add_argument("--insecure", action="store_true", help="do not verify certificates")
    return parser


# -- serve ---------------------------------------------------------------------------------


def load_tokens(path: str) -> dict[str, str]:
    """Read a ``--tokens`` file: a JSON object mapping token to user id."""
    with open(path, encoding="utf-8") as fh:
        tokens: Any = json.load(fh)
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()
    ):
        raise ValueError("expected a JSON object mapping token to user id")
    return tokens


def _authenticator(table: Mapping[str, str]) -> Authenticator:

    async def authenticate(request: ConnectRequest) -> Accept | Reject:
        user = table.get(request.token or "")
        if user is None:
            return Reject(reason="unknown token" if request.token else "no token")
        return Accept(user_id=user)

    return authenticate


def _listeners(args: argparse.Namespace, quic_idle: float) -> list[Listener]:
    kinds: tuple[ListenerKind, ...] = ("ws", "wss", "quic")
    chosen: list[tuple[ListenerKind, tuple[str, int]]] = [
        (kind, getattr(args, kind)) for kind in kinds if getattr(args, kind) is not None
    ]
    if not chosen:  # DESIGN §7: no option, the defaults; any option replaces them
        chosen = [("ws", ("127.0.0.1", 8080)), ("quic", ("127.0.0.1", 8081))]
    return [
        Listener(
            kind=kind,
            host=host,
            port=port,
            certfile=args.cert,
            keyfile=args.key,
            idle_timeout=quic_idle if kind == "quic" else None,
        )
        for kind, (host, port) in chosen
    ]


async def run_serve(args: argparse.Namespace) -> None:
    """``flare serve``: the chat room on the configured listeners until SIGINT/SIGTERM."""
    config = ServerConfig(
        default_format=args.format,
        default_compression=args.compression,
        prefer=args.prefer,
        auth_timeout=args.auth_timeout,
        idle_timeout=args.idle_timeout,
        limits=Limits(max_frame=args.max_frame),
    )
    hub = Hub(
        config,
        authenticator=_authenticator(args.token_table) if args.tokens else None,
        strategy=strategy_from_name(args.devices),
    )
    install_chat_room(hub)
    # QUIC's idle timeout stays above the clients' heartbeat timeout and our own idle
    # deadline, so flare's heartbeat decides, with a close code (B25).
    listeners = _listeners(
        args, max(120.0, args.heartbeat_timeout + 30.0, args.idle_timeout + 30.0)
    )
    # Signals are caught before the ready line goes out, so a harness may stop us at once.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            bound = await tg.start(serve, hub, listeners)
            print(json.dumps(bound), flush=True)
            async for signum in signals:
                log.info("signal %s: draining %d connections", signum, len(hub.connections))
                await hub.shutdown()
                break
            tg.cancel_scope.cancel()


# -- connect -------------------------------------------------------------------------------


def _text_or_b64(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def describe(event: object) -> dict[str, Any]:
    """One received event as the JSON object ``flare connect`` prints; a ``connected``
    state also names the negotiated ``format`` and ``compression``."""
    if isinstance(event, StateChanged):
        out: dict[str, Any] = {
            "event": "state",
            "state": event.state.value,
            "code": None if event.code is None else event.code.code,
            "url": event.url,
        }
        if event.encoding is not None:
            out["format"] = event.encoding[0].wire_name
            out["compression"] = event.encoding[1].value
        return out
    if isinstance(event, Kicked):
        return {
            "event": "kicked",
            "message": event.message,
            "reason": event.reason,
            "platform": event.platform,
            "new_device_id": event.new_device_id,
        }
    if isinstance(event, FrameReceived):
        frame = event.frame
        out = {
            "event": "frame",
            "kind": event.kind.value,
            "message_id": frame.message_id,
        }
        which = frame.command.WhichOneof("type")
        if which == "message":
            body = frame.command.message
            out["payload"] = _text_or_b64(body.payload)
            out["metadata"] = {k: v.decode("utf-8", "replace") for k, v in body.metadata.items()}
        elif which == "custom":
            out["name"] = frame.command.custom.name
            out["data"] = _text_or_b64(frame.command.custom.data)
        elif which == "notification":
            out["title"] = frame.command.notification.title
            out["content"] = _text_or_b64(frame.command.notification.content)
        elif which == "system":
            out["type"] = int(frame.command.system.type)
            out["message"] = frame.command.system.message
        return out
    return {"event": type(event).__name__}


async def _stdin_lines() -> AsyncIterator[str]:
    """stdin's lines, read without a blocking thread where possible, so that a terminal
    close can stop the command at once even on an interactive stdin."""
    fd = sys.stdin.fileno()
    pending = b""
    while True:
        try:
            await anyio.wait_readable(fd)
            chunk = os.read(fd, 65536)
        except (OSError, ValueError):
            # A regular file cannot be polled (epoll refuses it), but reading it never
            # blocks for long: a worker thread is fine there.
            chunk = await anyio.to_thread.run_sync(os.read, fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


async def run_connect(args: argparse.Namespace) -> int:
    """``flare connect``: returns the exit status (0 after a clean close or stdin's end,
    1 after a terminal close code such as ``auth_failed`` or ``kicked``)."""
    import ssl

    device = None
    if args.device_id:
        device = DeviceInfo(
            device_id=args.device_id, platform=Platform.parse(args.platform or "pc")
        )
    config = ClientConfig(
        format=args.format,
        compression=args.compression,
        force=args.force,
        device=device,
        user_id=args.user,
        token=args.token,
    )
    context = None
    quic_verify: bool | str = True
    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        quic_verify = False
    elif args.cafile:
        context = ssl.create_default_context(cafile=args.cafile)
        quic_verify = args.cafile
    client = Client(args.urls, config, ssl_context=context, quic_verify=quic_verify)
    async with client, anyio.create_task_group() as tg:

        async def await_ack(ident: str) -> None:
            try:
                await client.wait_ack(ident)
                _emit({"event": "ack", "message_id": ident})
            except SendFailed as exc:
                _emit({"event": "send_failed", "message_id": exc.message_id, "reason": exc.reason})

        async def read_stdin() -> None:
            async with anyio.create_task_group() as acks:
                async for line in _stdin_lines():
                    if not line:
                        continue
                    try:
                        # Queued in stdin order; only the ACKs are awaited concurrently.
                        ident = await client.start_send(line.encode())
                    except ClientClosed as exc:
                        _emit({"event": "send_failed", "reason": str(exc)})
                        break
                    acks.start_soon(await_ack, ident)
            await client.aclose()

        tg.start_soon(read_stdin)
        async for event in client:
            _emit(describe(event))
        tg.cancel_scope.cancel()  # the client is closed: stop reading stdin
    code = client.close_code
    return 0 if code is None or code.reconnect else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flare`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.wss is not None and not (args.cert and args.key):
            parser.error("--wss needs --cert and --key")
        args.token_table = None
        if args.tokens:
            try:
                args.token_table = load_tokens(args.tokens)
            except (OSError, ValueError) as exc:
                parser.error(f"--tokens {args.tokens}: {exc}")
    elif args.platform is not None and not args.device_id:
        # Device info is sent only with an id: a lone --platform would be dropped.
        parser.error("--platform needs --device-id")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            try:
                anyio.run(run_serve, args, backend=args.backend)
            except (ListenError, BaseExceptionGroup) as exc:
                # A listener could not start (port in use, no such address, unreadable
                # certificate): one line naming it, not a traceback through task groups.
                failure = _bind_failure(exc)
                if failure is None:
                    raise
                print(f"flare serve: {failure}", file=sys.stderr)
                return 1
            return 0
        result: int = anyio.run(run_connect, args, backend=args.backend)
        return result
    except KeyboardInterrupt:
        return 130


def _bind_failure(exc: BaseException) -> ListenError | None:
    """The :class:`ListenError` inside ``exc`` (task groups may have wrapped it), if that
    is all it is; any other error keeps its traceback."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, ListenError) else None
