"""Smoke test of the fuzz harnesses (``fuzz/``): every seed and a few hundred mutations each.

The long runs happen with ``python -m fuzz`` (see ``fuzz/README.md``); this keeps the
harnesses themselves under test: they pass over their seed corpora within their memory
limits, they are not vacuous (a planted bug is caught), and the runner reports findings.
Findings of the fuzzers that are not fixed yet would be pinned here as ``xfail(strict=True)``
reproductions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `fuzz/` is a top-level directory, not an installed package
    sys.path.insert(0, str(ROOT))

from flare_proto import LengthPrefixFramer, decode_frame, encode_frame, serialize  # noqa: E402
from fuzz import TARGETS, Harness, load  # noqa: E402
from fuzz import decode as decode_harness  # noqa: E402
from fuzz import framer as framer_harness  # noqa: E402
from fuzz.__main__ import main  # noqa: E402
from fuzz._engines import run_random  # noqa: E402
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
