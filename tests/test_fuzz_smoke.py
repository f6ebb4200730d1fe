"""Smoke test of the fuzz harnesses (``fuzz/``): every seed and a few hundred mutations each.

The long runs happen with ``python -m fuzz`` (see ``fuzz/README.md``); this keeps the
harnesses themselves under test: they pass over their seed corpora within their memory
limits, they are not vacuous (a planted bug is caught), and the runner reports findings.
Findings of the fuzzers that are not fixed yet would be pinned here as ``xfail(strict=True)``
reproductions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `fuzz/` is a top-level directory, not an installed package
    sys.path.insert(0, str(ROOT))

from flare_proto import (  # noqa: E402
    CloseCode,
    LengthPrefixFramer,
    decode_frame,
    encode_frame,
    serialize,
)
from flare_proto._connection import ConnectionBase  # noqa: E402
from flare_proto._frames import ERROR  # noqa: E402
from fuzz import TARGETS, Harness, load  # noqa: E402
from fuzz import decode as decode_harness  # noqa: E402
from fuzz import framer as framer_harness  # noqa: E402
from fuzz.__main__ import main  # noqa: E402
from fuzz._engines import atheris_available, run_random  # noqa: E402
from fuzz._invariants import Finding  # noqa: E402

MUTATIONS = 300
VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text("utf-8"))


@pytest.mark.parametrize("name", TARGETS)
def test_harness_passes_seeds_and_mutations(name: str, tmp_path: Path) -> None:
    harness = load(name)
    seeds = harness.seeds()
    assert len(seeds) >= 20
    result = run_random(
        harness,
        seconds=None,
        runs=len(seeds) + MUTATIONS,
        seed=20240601,
        max_len=4096,
        findings_dir=tmp_path,
        trace_memory=True,  # each input's peak allocation held to harness.memory_limit
    )
    assert result.finding is None, result.detail
    assert result.executions == len(seeds) + MUTATIONS


def test_decode_seeds_hold_every_golden_vector() -> None:
    seeds = set(decode_harness.seeds())
    for vector in VECTORS["frames"]:
        assert b"\x00" + bytes.fromhex(vector["protobuf_hex"]) in seeds
        assert b"\x00" + vector["json"].encode() in seeds
    for vector in VECTORS["compressed"]:
        assert b"\x00" + bytes.fromhex(vector["compressed_hex"]) in seeds


def test_framer_seeds_hold_the_golden_stream() -> None:
    stream = bytes.fromhex(VECTORS["length_prefixed_stream"]["hex"])
    assert any(seed.endswith(stream) for seed in framer_harness.seeds())


def test_decode_harness_catches_an_escaping_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes, limits: object = None) -> object:
        raise ValueError("not a DecodeError")

    monkeypatch.setattr(decode_harness, "decode_frame", broken)
    with pytest.raises(ValueError):
        decode_harness.one_input(b"\x00{}")


class _DropsLastFrame(LengthPrefixFramer):
    def receive(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        return super().receive(data)[:-1]


def test_framer_harness_catches_a_wrong_framer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framer_harness, "LengthPrefixFramer", _DropsLastFrame)
    with pytest.raises(Finding):
        framer_harness.one_input(b"\x00\x00\x00" + LengthPrefixFramer.frame(b"abc"))


# The connection harnesses' close rules (fuzz/_session.py), each broken on purpose in the
# core's one ERROR path, ``_fail``. Inputs: a fresh server jumped to its auth deadline
# (``_fail(auth_timeout)``), and a client whose CONNECT_ACK never comes, jumped to its
# handshake deadline (``_shut(auth_timeout)``, a CLOSE).
SERVER_AUTH_TIMEOUT = b"\x60\x00\x04"
CLIENT_HANDSHAKE_TIMEOUT = b"\x20\x00\x04"


def _error_without_code(self: ConnectionBase, code: CloseCode, reason: str, now: float) -> None:
    self._send(self._system(ERROR, now, reason))  # no code metadata
    self._set_closed(code, reason, by_peer=False)


def _close_without_code(self: ConnectionBase, code: CloseCode, reason: str, now: float) -> None:
    self._send(self._system(ERROR, now, reason, code))
    self._set_closed(None, reason, by_peer=False)


def _close_unannounced(self: ConnectionBase, code: CloseCode, reason: str, now: float) -> None:
    self._set_closed(code, reason, by_peer=False)


def _close_with_another_code(
    self: ConnectionBase, code: CloseCode, reason: str, now: float
) -> None:
    self._send(self._system(ERROR, now, reason, code))
    self._set_closed(CloseCode.PROTOCOL_ERROR, reason, by_peer=False)


def _close_silently_by_peer(self: ConnectionBase, code: CloseCode, reason: str, now: float) -> None:
    self._send(self._system(ERROR, now, reason, code))
    self._set_closed(code, reason, by_peer=True)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (_error_without_code, "sent ERROR without a code"),
        (_close_without_code, "closing frame with code"),
        (_close_unannounced, "without writing ERROR, CLOSE or KICKED"),
        (_close_with_another_code, "closing frame with code"),
        (_close_silently_by_peer, "closing frame with code"),
    ],
)
def test_connection_harness_catches_a_badly_announced_close(
    monkeypatch: pytest.MonkeyPatch, broken: object, message: str
) -> None:
    from fuzz import server as server_harness

    server_harness.one_input(SERVER_AUTH_TIMEOUT)  # passes with the real core
    monkeypatch.setattr(ConnectionBase, "_fail", broken)
    with pytest.raises(Finding, match=message):
        server_harness.one_input(SERVER_AUTH_TIMEOUT)


def test_client_harness_catches_a_timer_close_without_a_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fuzz import client as client_harness

    client_harness.one_input(CLIENT_HANDSHAKE_TIMEOUT)  # passes with the real core
    real_shut = ConnectionBase._shut

    def shut_without_code(
        self: ConnectionBase, code: CloseCode | None, reason: str, now: float
    ) -> None:
        real_shut(self, None, reason, now)  # what only a client's close() may do

    monkeypatch.setattr(ConnectionBase, "_shut", shut_without_code)
    with pytest.raises(Finding, match="sent CLOSE without a code"):
        client_harness.one_input(CLIENT_HANDSHAKE_TIMEOUT)


def _boom(data: bytes) -> None:
    if data.startswith(b"boom"):
        raise RuntimeError("planted")


def test_random_engine_saves_a_finding(tmp_path: Path) -> None:
    harness = Harness("planted", _boom, lambda: [b"fine", b"boom!"], memory_limit=1 << 20)
    result = run_random(harness, seconds=5, runs=None, seed=1, max_len=64, findings_dir=tmp_path)
    assert result.finding is not None
    assert result.finding.read_bytes() == b"boom!"
    assert "RuntimeError: planted" in result.detail


def test_command_line_runs_and_reproduces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    findings = tmp_path / "findings"
    argv = ["--engine", "random", "--runs", "40", "--findings-dir", str(findings)]
    assert main([*argv, "--target", "framer", "--target", "client"]) == 0
    out = capsys.readouterr().out
    assert "framer  random" in out and "client  random" in out and "0 finding(s)" in out
    saved = tmp_path / "decode-crash-seed"
    saved.write_bytes(decode_harness.seeds()[0])
    assert main(["--reproduce", str(saved)]) == 0
    assert "no finding" in capsys.readouterr().out


# -- `python -m fuzz` end to end: a planted harness (`--harness MODULE`) ------------------

PLANTED = textwrap.dedent(
    """
    \"\"\"A harness planted by tests/test_fuzz_smoke.py: {what}.\"\"\"

    MEMORY_LIMIT = 1 << 20
    SEEDS = [b"fine", b"good", b"{bad_seed}"]


    def seeds():
        return [s for s in SEEDS if s]


    def one_input(data):
        if {condition}:
            raise RuntimeError("planted finding")
    """
)
PLANTS = {
    # A seed fails: found on the first pass over the corpus, deterministic for both engines.
    "seed": {"what": "a seed fails", "bad_seed": "boom!", "condition": 'data == b"boom!"'},
    # Only an input the engine made up fails: mutated inputs really reach the harness.
    "mutation": {
        "what": "any input but a seed fails",
        "bad_seed": "",
        "condition": "data not in SEEDS",
    },
    "clean": {"what": "nothing fails", "bad_seed": "", "condition": "False"},
}
ENGINES = [
    "random",
    pytest.param(
        "atheris",
        marks=pytest.mark.skipif(not atheris_available(), reason="atheris is not installed"),
    ),
]


def _fuzz(tmp_path: Path, plant: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m fuzz --harness planted_fz.<plant> ARGS`` in a subprocess (the real exit
    status; the atheris engine's worker imports the module from PYTHONPATH too)."""
    package = tmp_path / "planted_fz"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").touch()
    (package / f"{plant}.py").write_text(PLANTED.format(**PLANTS[plant]))
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "fuzz", "--harness", f"planted_fz.{plant}", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("plant", ["seed", "mutation"])
@pytest.mark.parametrize("engine", ENGINES)
def test_command_line_exits_1_and_saves_the_finding(
    engine: str, plant: str, tmp_path: Path
) -> None:
    findings = tmp_path / "findings"
    ran = _fuzz(
        tmp_path, plant, "--engine", engine, "--runs", "500", "--findings-dir", str(findings)
    )
    report = f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    assert ran.returncode == 1, report
    assert "1 finding(s)" in ran.stdout and "RuntimeError: planted finding" in ran.stdout, report
    (saved,) = findings.iterdir()
    assert saved.name.startswith(f"planted_fz.{plant}-crash-"), saved
    data = saved.read_bytes()
    if plant == "seed":
        assert data == b"boom!"
    else:
        assert data not in (b"fine", b"good"), data
    assert data.hex() in ran.stdout, report  # the reproducer is printed too
    # The saved file replays the finding (the harness named by the file name).
    replay = _fuzz(tmp_path, plant, "--reproduce", str(saved))
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert "RuntimeError: planted finding" in replay.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_command_line_exits_0_without_a_finding(engine: str, tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    ran = _fuzz(
        tmp_path, "clean", "--engine", engine, "--runs", "500", "--findings-dir", str(findings)
    )
    assert ran.returncode == 0, f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    assert "0 finding(s)" in ran.stdout
    assert not findings.exists() or not any(findings.iterdir())


def test_command_line_refuses_a_bad_harness(tmp_path: Path) -> None:
    assert main(["--harness", "nodots"]) == 2
    assert main(["--harness", "planted_fz.absent", "--runs", "1"]) == 2
    assert main(["--harness", "fuzz.decode", "--target", "server"]) == 2


# -- findings of the fuzzers, fixed in the core (kept as regression tests) ------------------


@pytest.mark.parametrize(
    "data",
    [
        # timestamp = 0 (explicitly encoded), then an empty group of unknown field 15: "{|"
        bytes.fromhex("20007b7c"),
        # timestamp = 0, then unknown fields whose bytes begin with the zstd magic
        bytes.fromhex("200028b52ffd2000202301"),
    ],
    ids=["json-magic", "zstd-magic"],
)
def test_decoded_protobuf_frame_reencodes_to_decodable_bytes(data: bytes) -> None:
    frame, fmt, compression = decode_frame(data)
    # An all-default frame serializes to no bytes at all, which decode_frame refuses by
    # design; otherwise what we decoded must decode again after encoding.
    if serialize(frame, fmt):
        assert decode_frame(encode_frame(frame, fmt, compression))[0] == frame
