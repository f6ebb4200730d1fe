"""RecentSends, the server's memory of handled SENDs (docs/decisions.md, "Delivery"), and
the id source's random start that keeps two processes' ids apart."""

from __future__ import annotations

import pytest

from flare_proto import RecentSends, SequentialIds


def test_sender_is_user_and_device() -> None:
    assert RecentSends.sender("alice", "phone") == ("alice", "phone")
    assert RecentSends.sender("alice", None) == ("alice", "")
    assert RecentSends.sender(None, "phone") == ("", "phone")


@pytest.mark.parametrize(("user", "device"), [(None, None), ("", ""), (None, "")])
def test_anonymous_senders_are_not_remembered(user: str | None, device: str | None) -> None:
    """No user id and no device id: with no key, nothing is ever swallowed because
    another client used the same message id (at-least-once)."""
    assert RecentSends.sender(user, device) is None


def key(message: str, payload: bytes = b"p", sender: tuple[str, str] = ("u", "")) -> int:
    return RecentSends.fingerprint(sender, message, payload)


def test_fingerprint_tells_sends_apart() -> None:
    assert key("m1") == key("m1")
    # Another payload under the same id is another SEND (an id reused by the application).
    assert key("m1", b"other") != key("m1")
    assert key("m1", sender=("v", "")) != key("m1")
    assert key("m1", sender=("u", "d")) != key("m1")
    # Fields are not joined into one string, so no choice of ids makes two collide.
    assert key("m", sender=("a", "b\x00c")) != key("m", sender=("a\x00b", "c"))


def test_handled_sends_are_remembered() -> None:
    recent = RecentSends()
    assert key("m1") not in recent
    recent.add(key("m1"))
    recent.add(key("m1"))
    assert key("m1") in recent and len(recent) == 1
    assert key("m1", b"other") not in recent


def test_capacity_drops_the_oldest_first() -> None:
    recent = RecentSends(capacity=3)
    for i in range(4):
        recent.add(key(f"m{i}"))
    assert [key(f"m{i}") in recent for i in range(4)] == [False, True, True, True]
    assert len(recent) == 3


def test_bad_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity >= 1"):
        RecentSends(capacity=0)


def test_eviction_keeps_the_youngest_when_full() -> None:
    """Structural, not a timing (speed is P3's business): after many evictions the set
    holds exactly the ``capacity`` youngest SENDs."""
    recent = RecentSends(capacity=1000)
    for i in range(50_000):
        recent.add(key(f"m{i}"))
    assert len(recent) == 1000
    assert key("m49999") in recent and key("m49000") in recent
    assert key("m48999") not in recent


def test_ids_start_at_first_and_keep_their_shape() -> None:
    ids = SequentialIds(wall_offset=1_730_000_000.0, first=0xABCDEF)
    assert ids.message_id(0.0) == "1730000000000-0000000000abcdef"
    assert ids.message_id(0.0) == "1730000000000-0000000000abcdf0"
    assert SequentialIds().message_id(0.0) == "0-0000000000000000"
    with pytest.raises(ValueError):
        SequentialIds(first=1 << 64)
    with pytest.raises(ValueError):
        SequentialIds(first=-1)


def test_processes_do_not_share_ids() -> None:
    """The drivers' id source starts at a random counter; two fresh processes in the same
    millisecond would otherwise both send "<ms>-0000000000000000"."""
    import subprocess
    import sys

    code = "from flare_drivers._clock import process_ids; print(process_ids().message_id(0.0))"
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    first, second = (r.stdout.strip().rpartition("-")[2] for r in runs)
    assert len(first) == len(second) == 16 and first != second
