"""RecentSends, the server's memory of handled SENDs (docs/decisions.md, "Delivery"), and
the id source's random start that keeps two processes' ids apart."""

from __future__ import annotations

import pytest

from flare_proto import RecentSends, SequentialIds


def test_key_names_the_sender_the_message_and_its_content() -> None:
    h = hash(b"hi")
    assert RecentSends.key("alice", "phone", "m1", b"hi") == ("alice", "phone", "m1", h)
    assert RecentSends.key("alice", None, "m1", b"hi") == ("alice", "", "m1", h)
    assert RecentSends.key(None, "phone", "m1", b"hi") == ("", "phone", "m1", h)
    # Ids that would collide if the fields were joined into one string do not.
    assert RecentSends.key("a", "b\x00c", "m", b"") != RecentSends.key("a\x00b", "c", "m", b"")
    # An id reused for another message is another key: it must not pass for a resend.
    assert RecentSends.key("alice", "", "m1", b"hi") != RecentSends.key("alice", "", "m1", b"ho")


@pytest.mark.parametrize(
    ("user", "device", "message"),
    [(None, None, "m1"), ("", "", "m1"), ("alice", "phone", "")],
    ids=["anonymous", "empty ids", "no message id"],
)
def test_no_key_when_a_resend_could_not_be_told_apart(
    user: str | None, device: str | None, message: str
) -> None:
    """An anonymous sender keeps at-least-once delivery: with no key, nothing is ever
    swallowed because another client used the same message id."""
    assert RecentSends.key(user, device, message, b"x") is None


def test_seen_until_the_ttl_ends() -> None:
    recent = RecentSends(ttl=10.0)
    key = ("alice", "", "m1", 0)
    assert not recent.seen(key, 0.0)
    recent.add(key, 100.0)
    assert recent.seen(key, 100.0) and recent.seen(key, 109.9)
    assert not recent.seen(key, 110.0)
    assert not recent.seen(("bob", "", "m1", 0), 100.0)


def test_capacity_drops_the_oldest_first() -> None:
    recent = RecentSends(capacity=3, ttl=1000.0)
    keys = [("u", "", f"m{i}", 0) for i in range(5)]
    for t, key in enumerate(keys):
        recent.add(key, float(t))
    assert len(recent) == 3
    assert [recent.seen(k, 5.0) for k in keys] == [False, False, True, True, True]


def test_adding_again_refreshes_a_key() -> None:
    recent = RecentSends(capacity=2, ttl=10.0)
    a, b, c = ("u", "", "a", 0), ("u", "", "b", 0), ("u", "", "c", 0)
    recent.add(a, 0.0)
    recent.add(b, 1.0)
    recent.add(a, 5.0)  # a is young again: b is now the oldest
    recent.add(c, 6.0)
    assert recent.seen(a, 14.0) and recent.seen(c, 6.0) and not recent.seen(b, 6.0)


def test_expired_keys_are_dropped_when_adding() -> None:
    recent = RecentSends(ttl=1.0)
    for i in range(100):
        recent.add(("u", "", f"m{i}", 0), 0.0)
    recent.add(("u", "", "late", 0), 5.0)
    assert len(recent) == 1


@pytest.mark.parametrize(("capacity", "ttl"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_bad_limits_are_refused(capacity: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="capacity >= 1 and ttl > 0"):
        RecentSends(capacity=capacity, ttl=ttl)


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
