"""The ``flare`` command end to end (DESIGN §7): ``flare serve`` and ``flare connect`` as
subprocesses on loopback, talking to each other over ws://, wss:// and quic://.

Every process is started through :class:`~tests.drivers.helpers.FlareProcess`, which
reads its output in threads (every wait has a deadline) and kills it when the test ends.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flare_drivers._tls import LocalCA

from .helpers import (
    FLARE_SCRIPT,
    ROOT,
    FlareProcess,
    ServeProcess,
    connect_process,
    flare_command,
    free_udp_port,
)

CONNECTED = {"event": "state", "state": "connected"}


def connected(client: FlareProcess, timeout: float = 5.0, *, start: int = 0) -> dict[str, object]:
    line: dict[str, object] = client.expect_event(
        timeout, start=start, event="state", state="connected"
    )
    return line


def closed_with(client: FlareProcess, code: str | None, timeout: float = 5.0) -> None:
    client.expect_event(timeout, event="state", state="closed", code=code)


def assert_exits(proc: FlareProcess, timeout: float = 5.0) -> int:
    status = proc.wait(timeout)
    assert status is not None, f"still running after {timeout} s{proc.describe()}"
    return status


@pytest.fixture
def chat_server() -> Iterator[ServeProcess]:
    """``flare serve`` on a free WS and a free QUIC port."""
    with ServeProcess("--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0") as server:
        yield server
        assert server.stop() == 0, server.describe()


def write_tokens(tmp_path: Path, tokens: dict[str, str]) -> str:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(tokens), encoding="utf-8")
    return str(path)


# -- flare serve ----------------------------------------------------------------------------


def _port_busy(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.parametrize(
    ("sig", "script"), [(signal.SIGTERM, True), (signal.SIGINT, False)], ids=["SIGTERM", "SIGINT"]
)
def test_serve_without_arguments_uses_8080_and_8081(sig: int, script: bool) -> None:
    if _port_busy(socket.SOCK_STREAM, 8080) or _port_busy(socket.SOCK_DGRAM, 8081):
        pytest.skip("127.0.0.1:8080/tcp or 127.0.0.1:8081/udp is busy")
    try:
        server = ServeProcess(script=script)
    except AssertionError as exc:
        if "in use" in str(exc):  # lost a race for the port with someone else
            pytest.skip("127.0.0.1:8080 or :8081 became busy")
        raise
    with server:
        assert server.ready_line == '{"ws": "127.0.0.1:8080", "quic": "127.0.0.1:8081"}'
        assert server.lines[0] == {"ws": "127.0.0.1:8080", "quic": "127.0.0.1:8081"}
        # It really serves there: a client connects over each.
        with (
            connect_process("ws://127.0.0.1:8080", name="ws") as ws,
            connect_process("quic://127.0.0.1:8081", options=["--insecure"], name="quic") as quic,
        ):
            connected(ws)
            connected(quic)
        status = server.stop(sig)
        assert status == 0, server.describe()


def test_serve_port_zero_replaces_the_defaults() -> None:
    with ServeProcess("--ws", "127.0.0.1:0") as server:
        assert list(server.addresses) == ["ws"]  # no QUIC listener any more
        host, _, port = server.addresses["ws"].rpartition(":")
        assert host == "127.0.0.1" and int(port) not in (0, 8080)
        assert server.stop() == 0, server.describe()
    with ServeProcess("--quic", "127.0.0.1:0", "--ws", "127.0.0.1:0") as server:
        assert sorted(server.addresses) == ["quic", "ws"]
        assert all(not a.endswith((":0", ":8080", ":8081")) for a in server.addresses.values())
        assert server.stop() == 0, server.describe()


def test_serve_signal_right_after_ready_line() -> None:
    """A harness may stop the server as soon as it announced itself: the signal handlers
    are in place before the ready line (this once lost the race about half the time)."""
    statuses = []
    for attempt in range(8):
        sig = signal.SIGTERM if attempt % 2 else signal.SIGINT
        with ServeProcess("--ws", "127.0.0.1:0") as server:
            server.proc.send_signal(sig)  # at once
            statuses.append((sig.name, server.wait(5)))
        if statuses[-1][1] != 0:
            break
    assert all(status == 0 for _, status in statuses), statuses


def test_wss_with_cert_key_and_cafile(tmp_path: Path) -> None:
    ca = LocalCA.create()
    leaf = ca.issue()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    with ServeProcess(
        "--wss", "127.0.0.1:0", "--cert", str(tmp_path / "cert.pem"),
        "--key", str(tmp_path / "key.pem"),
    ) as server:  # fmt: skip
        assert list(server.addresses) == ["wss"]
        url = server.url("wss")
        with connect_process(url, options=["--cafile", str(tmp_path / "ca.pem")]) as client:
            assert connected(client)["url"] == url
            client.send_line("over tls")
            client.expect_event(event="ack")
            client.close_stdin()
            closed_with(client, None)
            assert assert_exits(client) == 0
        assert server.stop() == 0, server.describe()


# -- flare connect --------------------------------------------------------------------------


def test_chat_between_ws_and_quic_clients(chat_server: ServeProcess) -> None:
    ws_url, quic_url = chat_server.url("ws"), chat_server.url("quic")
    with (
        connect_process(ws_url, options=["--user", "alice"], name="alice") as alice,
        connect_process(quic_url, options=["--insecure", "--user", "bob"], name="bob") as bob,
    ):
        assert connected(alice)["url"] == ws_url
        assert connected(bob)["url"] == quic_url

        alice.send_line("hello bob, ça va? ✓")
        ack = alice.expect_event(event="ack")
        assert ack["message_id"]
        got = bob.expect_event(event="frame", kind="send")
        assert got["payload"] == {"text": "hello bob, ça va? ✓"}
        assert got["metadata"] == {"from": "alice"}
        assert got["message_id"] != ack["message_id"]  # the room sends a new SEND

        bob.send_line("hi alice")
        bob.expect_event(event="ack")
        got = alice.expect_event(event="frame", kind="send")
        assert (got["payload"], got["metadata"]) == ({"text": "hi alice"}, {"from": "bob"})
        # Nobody gets their own message back.
        assert not alice.matching(event="frame", payload={"text": "hello bob, ça va? ✓"})

        for client in (alice, bob):
            client.close_stdin()
            closed_with(client, None)
            assert assert_exits(client) == 0, client.describe()


def test_connect_on_trio_sends_stdin_lines_in_order(chat_server: ServeProcess) -> None:
    """``flare --backend trio connect``: lines written at once go out in stdin order (one
    task per line once sent them in whatever order trio scheduled the tasks)."""
    url = chat_server.url("ws")
    lines = [f"line {i:02d}" for i in range(20)]
    with (
        connect_process(url, options=["--user", "bob"], name="bob") as bob,
        FlareProcess(
            flare_command("--backend", "trio", "connect", "--user", "alice", url),
            name="alice",
            graceful=2.0,
        ) as alice,
    ):
        connected(bob)
        connected(alice)
        assert alice.proc.stdin is not None
        alice.proc.stdin.write("".join(f"{line}\n" for line in lines))
        alice.proc.stdin.flush()
        bob.expect_event(event="frame", kind="send", payload={"text": lines[-1]}, timeout=10)
        got = [e["payload"]["text"] for e in bob.matching(event="frame", kind="send")]
        assert got == lines
        for client in (alice, bob):
            client.close_stdin()
            assert assert_exits(client) == 0, client.describe()


def test_serve_shutdown_tells_connected_clients() -> None:
    with (
        ServeProcess("--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0") as server,
        connect_process(server.url("ws"), name="ws") as ws,
        connect_process(server.url("quic"), options=["--insecure"], name="quic") as quic,
    ):
        connected(ws)
        connected(quic)
        assert server.stop(signal.SIGTERM) == 0, server.describe()
        for client in (ws, quic):  # CLOSE server_shutdown: a code that reconnects
            client.expect_event(event="state", state="reconnecting", code="server_shutdown")


def test_racing_skips_a_dead_quic_url(chat_server: ServeProcess) -> None:
    dead = f"quic://127.0.0.1:{free_udp_port()}"
    ws_url = chat_server.url("ws")
    with connect_process(dead, ws_url, options=["--insecure"]) as client:
        assert connected(client)["url"] == ws_url
        assert client.expect_event(event="state", state="negotiating")["url"] == ws_url
        client.send_line("via the race winner")
        client.expect_event(event="ack")


def encoding(line: dict[str, object]) -> tuple[object, object]:
    return line.get("format"), line.get("compression")


def test_describe_state_lines() -> None:
    """The state lines keep their four keys; only a ``connected`` one that knows its
    encoding adds ``format`` and ``compression`` (after them, wire names)."""
    from flare_drivers._cli import describe
    from flare_drivers._client import ConnectionState, StateChanged
    from flare_proto import CloseCode, Compression, Format

    reconnecting = StateChanged(
        state=ConnectionState.RECONNECTING, code=CloseCode.SERVER_SHUTDOWN, url="ws://h:1"
    )
    assert describe(reconnecting) == {
        "event": "state", "state": "reconnecting", "code": "server_shutdown", "url": "ws://h:1"
    }  # fmt: skip
    up = StateChanged(
        state=ConnectionState.CONNECTED, url="quic://h:2",
        encoding=(Format.PROTOBUF, Compression.ZSTD),
    )  # fmt: skip
    assert list(describe(up).items()) == [
        ("event", "state"), ("state", "connected"), ("code", None), ("url", "quic://h:2"),
        ("format", "protobuf"), ("compression", "zstd"),
    ]  # fmt: skip


def test_connect_prints_the_negotiated_encoding() -> None:
    """The ``connected`` line names the encoding the server chose (DESIGN §3.2): with
    ``--prefer server`` a plain connect (json, none) gets the server default and a
    ``--force``d one gets exactly what it asked for; with ``--prefer client`` (the default)
    an unforced connect gets its own choice. Clients on different encodings still chat,
    with lines long enough to be compressed."""
    with ServeProcess(
        "--ws", "127.0.0.1:0", "--prefer", "server", "--format", "protobuf",
        "--compression", "gzip",
    ) as server:  # fmt: skip
        url = server.url("ws")
        forced_options = ["--force", "--format", "json", "--compression", "zstd"]
        with (
            connect_process(url, name="plain") as plain,
            connect_process(url, options=forced_options, name="forced") as forced,
        ):
            assert encoding(connected(plain)) == ("protobuf", "gzip")
            assert encoding(connected(forced)) == ("json", "zstd")
            assert "format" not in plain.expect_event(event="state", state="negotiating")
            long = "ünïcode " * 64  # above compress_min_bytes (256) in every encoding
            plain.send_line(long)
            plain.expect_event(event="ack")
            assert forced.expect_event(event="frame", kind="send")["payload"] == {"text": long}
            forced.send_line(long.upper())
            forced.expect_event(event="ack")
            got = plain.expect_event(event="frame", kind="send")
            assert got["payload"] == {"text": long.upper()}
        assert server.stop() == 0, server.describe()
    with ServeProcess("--ws", "127.0.0.1:0", "--format", "protobuf") as server:
        options = ["--format", "json", "--compression", "zstd"]
        with connect_process(server.url("ws"), options=options) as client:
            assert encoding(connected(client)) == ("json", "zstd")
        assert server.stop() == 0, server.describe()


def test_serve_max_frame_closes_the_sender_with_frame_too_large() -> None:
    """``--max-frame`` reaches the hub: a line that fits is ACKed; a SEND above the limit
    gets ``frame_too_large``, a terminal code, so the client does not reconnect: its
    pending SEND fails with that code and it exits with status 1."""
    with ServeProcess("--ws", "127.0.0.1:0", "--max-frame", "1000") as server:
        with connect_process(server.url("ws")) as client:
            assert encoding(connected(client)) == ("json", "none")  # nothing compressed
            client.send_line("fits")
            client.expect_event(event="ack")
            client.send_line("x" * 1000)  # JSON writes bytes as numbers: about 4 kB
            failed = client.expect_event(event="send_failed")
            assert failed["reason"] == "frame_too_large"
            closed_with(client, "frame_too_large")
            assert assert_exits(client, 2) == 1  # stdin still open: the close ended it
            assert not client.matching(event="state", state="reconnecting")
        assert server.stop() == 0, server.describe()


def test_serve_idle_timeout_closes_a_silent_client() -> None:
    """``--idle-timeout 1`` reaches the hub: ``flare connect`` pings only every 30 s, so
    after about a second of silence the server closes it with ``heartbeat_timeout``, a
    code that allows reconnecting, and the client connects again."""
    with (
        ServeProcess("--ws", "127.0.0.1:0", "--idle-timeout", "1") as server,
        connect_process(server.url("ws")) as client,
    ):
        connected(client)
        closed = client.expect_event(event="state", state="reconnecting")
        assert closed["code"] == "heartbeat_timeout"
        connected(client, start=client.lines.index(closed) + 1)


def test_tokens_good_token_uses_the_mapped_user(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path, {"tok-alice": "alice", "tok-bob": "bob"})
    with ServeProcess("--ws", "127.0.0.1:0", "--tokens", tokens) as server:
        url = server.url("ws")
        # The claimed --user is not what counts: the token's user id is.
        with (
            connect_process(url, options=["--token", "tok-alice", "--user", "mallory"]) as alice,
            connect_process(url, options=["--token", "tok-bob"], name="bob") as bob,
        ):
            connected(alice)
            connected(bob)
            alice.send_line("signed by my token")
            alice.expect_event(event="ack")
            got = bob.expect_event(event="frame", kind="send")
            assert got["metadata"] == {"from": "alice"}
        assert server.stop() == 0, server.describe()


def test_tokens_bad_token_is_auth_failed(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path, {"tok-alice": "alice"})
    with ServeProcess("--ws", "127.0.0.1:0", "--tokens", tokens) as server:
        for options in (["--token", "wrong"], ["--user", "alice"]):  # bad token, no token
            with connect_process(server.url("ws"), options=options) as client:
                closed_with(client, "auth_failed")
                assert not client.matching(**CONNECTED)
                assert not client.matching(event="state", state="reconnecting")
                client.close_stdin()
                assert_exits(client)
                assert "tok-alice" not in client.stderr
        assert server.stop() == 0, server.describe()
        assert "wrong" not in server.stderr  # tokens never reach the logs (B4)


def kick_setup(tmp_path: Path) -> tuple[str, list[str], list[str]]:
    tokens = write_tokens(tmp_path, {"t1": "alice", "t2": "alice"})
    first = ["--token", "t1", "--user", "alice", "--device-id", "d1", "--platform", "ios"]
    second = ["--token", "t2", "--user", "alice", "--device-id", "d2", "--platform", "ios"]
    return tokens, first, second


def test_devices_platform_exclusive_kicks_the_first(tmp_path: Path) -> None:
    tokens, first, second = kick_setup(tmp_path)
    with ServeProcess(
        "--ws", "127.0.0.1:0", "--tokens", tokens, "--devices", "platform-exclusive"
    ) as server:
        url = server.url("ws")
        with connect_process(url, options=first, name="d1") as d1:
            connected(d1)
            with connect_process(url, options=second, name="d2") as d2:
                connected(d2)
                kicked = d1.expect_event(event="kicked")
                assert kicked["reason"] == "device_conflict"
                assert kicked["new_device_id"] == "d2"
                assert kicked["platform"] == "IOS"
                closed_with(d1, "kicked")
                assert not d1.matching(event="state", state="reconnecting")
                # d2 stays and works.
                d2.send_line("still here")
                d2.expect_event(event="ack")
                assert not d2.matching(event="kicked")
                d1.close_stdin()
                assert_exits(d1)
        assert server.stop() == 0, server.describe()


@pytest.mark.parametrize("case", ["auth_failed", "kicked"])
def test_connect_exits_after_a_terminal_close(tmp_path: Path, case: str) -> None:
    tokens, first, second = kick_setup(tmp_path)
    with ServeProcess(
        "--ws", "127.0.0.1:0", "--tokens", tokens, "--devices", "platform-exclusive"
    ) as server:
        url = server.url("ws")
        if case == "auth_failed":
            with connect_process(url, options=["--token", "wrong"]) as client:
                closed_with(client, "auth_failed")
                assert assert_exits(client, 2) == 1  # stdin still open; terminal code: 1
        else:
            with connect_process(url, options=first, name="d1") as d1:
                connected(d1)
                with connect_process(url, options=second, name="d2") as d2:
                    connected(d2)
                    closed_with(d1, "kicked")
                    assert assert_exits(d1, 2) == 1  # stdin still open; terminal code: 1


def test_connect_exits_cleanly_when_stdin_ends_before_connecting() -> None:
    """stdin ends while the client is still backing off between failed attempts: a clean
    exit (``Client.aclose()`` with no connection up once raised CancelledError)."""
    with socket.socket() as sock:  # a TCP port nobody listens on: connections refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with connect_process(f"ws://127.0.0.1:{port}", name="unconnected") as client:
        client.expect_event(event="state", state="connecting")
        time.sleep(0.3)  # a failed attempt, now backing off
        client.close_stdin()
        status = assert_exits(client)
        assert "Traceback" not in client.stderr, client.describe()
        assert status == 0, client.describe()


# -- invalid arguments ----------------------------------------------------------------------


def run_flare(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flare_command(*args),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--ws", "nonsense"], "argument --ws: expected HOST:PORT, got 'nonsense'"),
        (["serve", "--quic", "127.0.0.1:http"], "argument --quic: expected HOST:PORT"),
        (["serve", "--devices", "bogus"], "argument --devices: invalid choice: 'bogus'"),
        (["serve", "--format", "xml"], "argument --format: format must be protobuf or json"),
        (["serve", "--prefer", "nobody"], "argument --prefer: invalid choice: 'nobody'"),
        (["serve", "--max-frame", "0"], "argument --max-frame: expected a number of bytes > 0"),
        (["serve", "--idle-timeout", "-1"], "argument --idle-timeout: expected a number of"),
        (["connect", "--compression", "lz4", "ws://x:1"], "argument --compression"),
        (["connect"], "the following arguments are required: URL"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_invalid_arguments_exit_2(args: list[str], message: str) -> None:
    result = run_flare(*args)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--ws", "127.0.0.1:99999"], "--ws"),
        (["serve", "--wss", "127.0.0.1:0"], "--cert"),
        (["serve", "--tokens", "/nonexistent/tokens.json"], "/nonexistent/tokens.json"),
        (["connect", "http://127.0.0.1:1"], "http://127.0.0.1:1"),
        (["connect", "--platform", "ios", "ws://127.0.0.1:1"], "--platform needs --device-id"),
    ],
    ids=[
        "port-out-of-range",
        "wss-without-cert",
        "missing-tokens-file",
        "bad-url-scheme",
        "platform-without-device-id",
    ],
)
def test_invalid_arguments_found_late(args: list[str], message: str) -> None:
    try:
        result = run_flare(*args, timeout=5.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flare {' '.join(args)} still running after 5 s")
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["ws", "quic"])
def test_serve_on_a_busy_port_says_which_and_exits_1(kind: str) -> None:
    """One line naming the listener and the reason, exit 1; no traceback, no ready line."""
    import errno
    import socket

    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "ws" else socket.SOCK_DGRAM)
    with busy:
        busy.bind(("127.0.0.1", 0))
        if kind == "ws":
            busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            flare_command("serve", f"--{kind}", f"127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    expected = f"flare serve: [Errno {errno.EADDRINUSE}] cannot listen on {kind} 127.0.0.1:{port}: "
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["wss", "quic"])
def test_serve_with_a_missing_certificate_names_the_file(kind: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = subprocess.run(
        flare_command("serve", f"--{kind}", "127.0.0.1:0", "--cert", str(missing), "--key",
                      str(missing)),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert f"cannot listen on {kind} 127.0.0.1:0: No such file or directory: {missing}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_module_and_script_are_the_same_command() -> None:
    assert FLARE_SCRIPT.exists(), FLARE_SCRIPT
    for argv in (flare_command("--help"), flare_command("--help", script=True)):
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result
        assert "usage: flare" in result.stdout
        assert "serve" in result.stdout and "connect" in result.stdout
    assert sys.executable  # the module form runs under the test interpreter
