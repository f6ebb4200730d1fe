"""Device platforms, conflict strategies and the device registry (reference §7, B1, B2)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_proto._device_info import DeviceInfo, Platform, PlatformKind
from flare_proto._devices import (
    STRATEGY_NAMES,
    UNKNOWN_PLATFORM,
    AllowAll,
    Conflict,
    Custom,
    DeviceRegistry,
    DeviceStrategy,
    FullyExclusive,
    MobileExclusive,
    MobilePcCoexist,
    PlatformExclusive,
    kick_notice,
    strategy_from_name,
)

K = PlatformKind
WEB, PC, H5 = Platform(K.WEB), Platform(K.PC), Platform(K.H5)
ANDROID, IOS, HARMONY = Platform(K.ANDROID), Platform(K.IOS), Platform(K.HARMONYOS)
OTHER_X, OTHER_Y = Platform(K.OTHER, "x"), Platform(K.OTHER, "y")
MOBILES = (H5, ANDROID, IOS, HARMONY)
ALL = (WEB, PC, *MOBILES, OTHER_X, OTHER_Y)
_ANY = (frozenset(PlatformKind),)  # a whitelist that allows every mix


def dev(platform: Platform, device_id: str = "d") -> DeviceInfo:
    return DeviceInfo(device_id=device_id, platform=platform)


# --- platforms (reference §7.1) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web", WEB),
        ("WEB", WEB),
        ("pc", PC),
        ("desktop", PC),
        ("Desktop", PC),
        ("h5", H5),
        ("mobile_web", H5),
        ("android", ANDROID),
        ("ios", IOS),
        ("iPhone", IOS),
        ("IPAD", IOS),
        ("harmonyos", HARMONY),
        ("harmony", HARMONY),
        ("OpenHarmony", HARMONY),
        ("Smart-TV", Platform(K.OTHER, "smart-tv")),
        ("x", OTHER_X),
        ("", UNKNOWN_PLATFORM),
    ],
)
def test_platform_parse(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected


def test_other_platforms_compare_by_lower_cased_name() -> None:
    assert Platform.parse("X") == Platform.parse("x") == OTHER_X
    assert OTHER_X != OTHER_Y


@pytest.mark.parametrize(
    ("platform", "debug", "wire"),
    [
        (WEB, "Web", "web"),
        (PC, "PC", "pc"),
        (H5, "H5", "h5"),
        (ANDROID, "Android", "android"),
        (IOS, "IOS", "ios"),
        (HARMONY, "HarmonyOS", "harmonyos"),
        (Platform.parse("XYZ"), 'Other("xyz")', "xyz"),
    ],
)
def test_platform_names(platform: Platform, debug: str, wire: str) -> None:
    assert platform.debug_name == debug
    assert platform.wire_name == wire == str(platform)
    assert Platform.parse(wire) == platform


def test_is_mobile() -> None:
    assert [p for p in ALL if p.is_mobile] == list(MOBILES)


# --- strategies (reference §7.2) -----------------------------------------------------------


def test_allow_all_never_conflicts() -> None:
    for new in ALL:
        assert AllowAll().conflicts(set(ALL), new) == set()


def test_platform_exclusive() -> None:
    s = PlatformExclusive()
    assert s.conflicts({IOS, PC}, IOS) == {IOS}
    assert s.conflicts({IOS, PC}, ANDROID) == set()
    assert s.conflicts({OTHER_X}, OTHER_X) == {OTHER_X}
    assert s.conflicts({OTHER_X}, OTHER_Y) == set()
    assert s.conflicts(set(), IOS) == set()


def test_mobile_exclusive() -> None:
    s = MobileExclusive()
    assert s.conflicts({IOS, PC, H5}, ANDROID) == {IOS, H5}
    assert s.conflicts({IOS, PC}, PC) == set()
    assert s.conflicts({IOS, WEB}, WEB) == set()
    assert s.conflicts({IOS, OTHER_X}, OTHER_X) == set()


def test_fully_exclusive() -> None:
    s = FullyExclusive()
    assert s.conflicts({IOS, PC, OTHER_X}, WEB) == {IOS, PC, OTHER_X}
    assert s.conflicts(set(), WEB) == set()


def test_mobile_pc_coexist() -> None:
    s = MobilePcCoexist()
    assert s.conflicts({PC, IOS}, WEB) == {PC}
    assert s.conflicts({WEB, IOS}, PC) == {WEB}
    assert s.conflicts({WEB, PC, IOS, OTHER_X}, PC) == {WEB, PC}
    assert s.conflicts({PC, IOS, H5, OTHER_X}, ANDROID) == {IOS, H5}
    assert s.conflicts({PC, IOS, OTHER_X}, OTHER_X) == {OTHER_X}
    assert s.conflicts({PC, IOS, OTHER_X}, OTHER_Y) == set()


def test_custom_exclusive_groups() -> None:
    s = Custom(exclusive_groups=(frozenset({K.ANDROID, K.IOS}),), allowed_combinations=_ANY)
    assert s.conflicts({ANDROID, PC}, IOS) == {ANDROID}
    assert s.conflicts({ANDROID, PC}, HARMONY) == set()
    assert s.conflicts({IOS}, IOS) == {IOS}


def test_custom_groups_are_unioned() -> None:
    s = Custom(
        exclusive_groups=(frozenset({K.IOS, K.ANDROID}), frozenset({K.IOS, K.PC})),
        allowed_combinations=_ANY,
    )
    assert s.conflicts({ANDROID, PC, WEB}, IOS) == {ANDROID, PC}


def test_custom_other_matches_by_kind() -> None:
    s = Custom(exclusive_groups=(frozenset({K.OTHER}),), allowed_combinations=_ANY)
    assert s.conflicts({OTHER_X, PC}, OTHER_Y) == {OTHER_X}
    # Without a group, two Other names are one kind, like two iOS devices: they coexist.
    assert Custom().conflicts({OTHER_X}, OTHER_Y) == set()


def test_custom_allowed_combinations() -> None:
    s = Custom(allowed_combinations=(frozenset({K.WEB, K.PC}), frozenset({K.IOS, K.PC})))
    assert s.conflicts({WEB}, PC) == set()
    assert s.conflicts({PC}, IOS) == set()
    assert s.conflicts({WEB}, IOS) == {WEB}  # {Web, iOS} is not allowed → kick all
    assert s.conflicts({WEB, PC}, IOS) == {WEB, PC}
    assert s.conflicts({IOS}, IOS) == set()  # a single platform is always fine


def test_custom_empty_whitelist_allows_no_mix() -> None:
    assert Custom().conflicts({PC}, IOS) == {PC}
    assert Custom().conflicts({IOS}, IOS) == set()


def test_custom_combination_checked_after_group_kicks() -> None:
    # Android is kicked by the group; what remains with the new iOS ({PC, iOS}) is allowed.
    s = Custom(
        exclusive_groups=(frozenset({K.IOS, K.ANDROID}),),
        allowed_combinations=(frozenset({K.IOS, K.PC}),),
    )
    assert s.conflicts({ANDROID, PC}, IOS) == {ANDROID}
    # With Web instead of PC the remainder {Web, iOS} is not allowed: everything goes.
    assert s.conflicts({ANDROID, WEB}, IOS) == {ANDROID, WEB}


def test_custom_validates_its_arguments() -> None:
    with pytest.raises(TypeError):
        Custom(exclusive_groups=[frozenset({K.IOS})])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Custom(allowed_combinations=(frozenset({"ios"}),))  # type: ignore[arg-type]


def test_strategy_from_name() -> None:
    assert STRATEGY_NAMES == (
        "allow-all",
        "platform-exclusive",
        "mobile-exclusive",
        "fully-exclusive",
        "mobile-pc-coexist",
    )
    for name in STRATEGY_NAMES:
        s = strategy_from_name(name)
        assert s.name == name
        assert isinstance(s, DeviceStrategy)
    assert strategy_from_name("Mobile_PC_Coexist") == MobilePcCoexist()
    assert Custom().name == "custom"


def test_strategy_from_name_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="valid names: allow-all, platform-exclusive"):
        strategy_from_name("custom")
    with pytest.raises(ValueError, match="'nope'"):
        strategy_from_name("nope")


# --- registry ------------------------------------------------------------------------------


def test_platform_exclusive_ios_kicks_ios_not_pc() -> None:
    reg = DeviceRegistry(PlatformExclusive())
    assert reg.admit("c1", "alice", dev(IOS, "phone1")) == []
    assert reg.admit("c2", "alice", dev(PC, "laptop")) == []
    kicked = reg.admit("c3", "alice", dev(IOS, "phone2"))
    assert kicked == [Conflict("c1", "alice", dev(IOS, "phone1"))]
    assert kicked[0].platform == IOS
    assert reg.devices_of("alice") == [("c2", dev(PC, "laptop")), ("c3", dev(IOS, "phone2"))]
    assert "c1" not in reg
    assert reg.user_of("c1") is None
    assert len(reg) == 2


def test_same_device_reconnecting_is_kicked() -> None:
    reg = DeviceRegistry(PlatformExclusive())
    reg.admit("c1", "alice", dev(IOS, "phone"))
    assert [c.connection_id for c in reg.admit("c2", "alice", dev(IOS, "phone"))] == ["c1"]


def test_mobile_exclusive_android_kicks_ios_not_pc() -> None:
    reg = DeviceRegistry(MobileExclusive())
    reg.admit("ios", "alice", dev(IOS))
    reg.admit("pc", "alice", dev(PC))
    reg.admit("h5", "bob", dev(H5))
    assert [c.connection_id for c in reg.admit("android", "alice", dev(ANDROID))] == ["ios"]
    assert [cid for cid, _ in reg.devices_of("alice")] == ["pc", "android"]
    assert [cid for cid, _ in reg.devices_of("bob")] == ["h5"]


def test_mobile_pc_coexist_registry() -> None:
    reg = DeviceRegistry(MobilePcCoexist())
    reg.admit("web", "alice", dev(WEB))
    reg.admit("ios", "alice", dev(IOS))
    reg.admit("x", "alice", dev(OTHER_X))
    assert [c.connection_id for c in reg.admit("pc", "alice", dev(PC))] == ["web"]
    assert [c.connection_id for c in reg.admit("web2", "alice", dev(WEB))] == ["pc"]
    assert reg.admit("y", "alice", dev(OTHER_Y)) == []
    assert [c.connection_id for c in reg.admit("x2", "alice", dev(OTHER_X))] == ["x"]
    assert [c.connection_id for c in reg.admit("h5", "alice", dev(H5))] == ["ios"]
    assert [cid for cid, _ in reg.devices_of("alice")] == ["web2", "y", "x2", "h5"]


def test_fully_exclusive_and_kick_order() -> None:
    reg = DeviceRegistry(FullyExclusive())
    for cid, p in [("a", PC), ("b", IOS), ("c", WEB), ("d", PC)]:
        reg.admit(cid, "alice", dev(p))
        assert [c for c, _ in reg.devices_of("alice")] == [cid]
    # Kicked connections come back in registration order: Custom() lets PCs pile up, and a
    # mixed set with an empty whitelist kicks everyone.
    reg2 = DeviceRegistry(Custom())
    for cid in "abcd":
        reg2.admit(cid, "alice", dev(PC, cid))
    kicked = reg2.admit("e", "alice", dev(ANDROID))
    assert [c.connection_id for c in kicked] == ["a", "b", "c", "d"]


def test_allow_all_registry_keeps_everything() -> None:
    reg = DeviceRegistry()
    assert isinstance(reg.strategy, AllowAll)
    for i in range(5):
        assert reg.admit(f"c{i}", "alice", dev(IOS, "same")) == []
    assert len(reg) == 5


def test_custom_registry() -> None:
    reg = DeviceRegistry(
        Custom(
            exclusive_groups=(frozenset({K.IOS, K.ANDROID}),),
            allowed_combinations=(frozenset({K.IOS, K.ANDROID, K.PC}),),
        )
    )
    reg.admit("pc", "alice", dev(PC))
    reg.admit("ios", "alice", dev(IOS))
    assert [c.connection_id for c in reg.admit("android", "alice", dev(ANDROID))] == ["ios"]
    assert [c.connection_id for c in reg.admit("web", "alice", dev(WEB))] == ["pc", "android"]
    assert [cid for cid, _ in reg.devices_of("alice")] == ["web"]


def test_users_never_interfere() -> None:
    # B1: the registry only knows the user id it is given (the authenticated one).
    reg = DeviceRegistry(FullyExclusive())
    reg.admit("a1", "alice", dev(IOS))
    assert reg.admit("b1", "bob", dev(IOS)) == []
    assert reg.admit("b2", "bob", dev(PC))[0].user_id == "bob"
    assert reg.devices_of("alice") == [("a1", dev(IOS))]
    assert reg.user_of("a1") == "alice"
    assert sorted(reg.users()) == ["alice", "bob"]


def test_connection_without_device_counts_as_unknown() -> None:
    reg = DeviceRegistry(FullyExclusive())
    reg.admit("anon", "alice", None)
    kicked = reg.admit("ios", "alice", dev(IOS))
    assert kicked == [Conflict("anon", "alice", None)]
    assert kicked[0].platform == UNKNOWN_PLATFORM
    assert [c.connection_id for c in reg.admit("anon2", "alice", None)] == ["ios"]
    reg = DeviceRegistry(PlatformExclusive())
    reg.admit("anon", "alice", None)
    assert reg.admit("ios", "alice", dev(IOS)) == []
    assert [c.connection_id for c in reg.admit("anon2", "alice", None)] == ["anon"]


def test_remove_is_idempotent_and_frees_the_user() -> None:
    reg = DeviceRegistry(PlatformExclusive())
    reg.admit("c1", "alice", dev(IOS))
    reg.remove("c1")
    reg.remove("c1")
    reg.remove("never")
    assert len(reg) == 0
    assert "c1" not in reg
    assert reg.devices_of("alice") == []
    assert list(reg.users()) == []
    # Re-admitting the same id (and platform) after removal works and kicks nobody.
    assert reg.admit("c1", "alice", dev(IOS)) == []


def test_readmit_after_kick() -> None:
    reg = DeviceRegistry(PlatformExclusive())
    reg.admit("c1", "alice", dev(IOS, "a"))
    reg.admit("c2", "alice", dev(IOS, "b"))
    reg.remove("c1")  # the server's close of the kicked connection: a no-op now
    assert [c.connection_id for c in reg.admit("c1", "alice", dev(IOS, "a"))] == ["c2"]
    assert reg.devices_of("alice") == [("c1", dev(IOS, "a"))]


def test_admit_misuse_raises_and_changes_nothing() -> None:
    reg = DeviceRegistry(FullyExclusive())
    reg.admit("c1", "alice", dev(IOS))
    with pytest.raises(ValueError, match="already registered"):
        reg.admit("c1", "alice", dev(PC))
    with pytest.raises(ValueError, match="already registered"):
        reg.admit("c1", "bob", dev(PC))
    with pytest.raises(ValueError, match="user_id"):
        reg.admit("c2", "", dev(PC))
    assert reg.devices_of("alice") == [("c1", dev(IOS))]
    assert len(reg) == 1
    assert "DeviceRegistry strategy=fully-exclusive" in repr(reg)


# --- KICKED text and metadata (reference §5.1, §7.3) ---------------------------------------


def test_kick_notice_matches_golden_text() -> None:
    text, meta = kick_notice("alice", dev(Platform.parse("xyz"), "new-1"), IOS)
    assert text == "device conflict: user alice already online on ios"
    assert meta == {
        "reason": "device_conflict",
        "platform": 'Other("xyz")',
        "new_device_id": "new-1",
    }
    assert kick_notice("alice", dev(IOS, "n"), PC)[1]["platform"] == "IOS"


def test_kick_notice_without_devices() -> None:
    text, meta = kick_notice("bob", None, None)
    assert text == "device conflict: user bob already online on unknown"
    assert meta == {"reason": "device_conflict"}


# --- properties ----------------------------------------------------------------------------


def _family(strategy: DeviceStrategy) -> Callable[[Platform, int], Hashable]:
    """An independent model: two devices conflict iff they share a family (unique otherwise)."""
    if isinstance(strategy, PlatformExclusive):
        return lambda p, i: p
    if isinstance(strategy, MobileExclusive):
        return lambda p, i: "mobile" if p.is_mobile else i
    if isinstance(strategy, FullyExclusive):
        return lambda p, i: "all"
    if isinstance(strategy, MobilePcCoexist):
        return lambda p, i: "mobile" if p.is_mobile else "desk" if p in (WEB, PC) else p
    return lambda p, i: i


_devices = st.one_of(st.none(), st.builds(dev, st.sampled_from(ALL), st.sampled_from("ab")))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.sampled_from(["alice", "bob"]), _devices),
        st.tuples(st.just("remove"), st.integers(0, 30), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(STRATEGY_NAMES), ops=_ops)
def test_registry_matches_model(name: str, ops: list[tuple[str, object, object]]) -> None:
    strategy = strategy_from_name(name)
    family = _family(strategy)
    reg = DeviceRegistry(strategy)
    model: list[tuple[str, str, DeviceInfo | None, Hashable]] = []  # (cid, user, dev, fam)
    ids = itertools.count()
    for op, arg, device in ops:
        if op == "admit":
            assert isinstance(arg, str)
            assert device is None or isinstance(device, DeviceInfo)
            i = next(ids)
            cid = f"c{i}"
            fam = family(device.platform if device else UNKNOWN_PLATFORM, i)
            expected = [m for m in model if m[1] == arg and m[3] == fam]
            got = reg.admit(cid, arg, device)
            assert got == [Conflict(c, u, d) for c, u, d, _ in expected]
            model = [m for m in model if m not in expected] + [(cid, arg, device, fam)]
        else:
            assert isinstance(arg, int)
            cid = f"c{arg}"
            reg.remove(cid)
            model = [m for m in model if m[0] != cid]
        for user in ("alice", "bob"):
            assert reg.devices_of(user) == [(c, d) for c, u, d, _ in model if u == user]
            # No two devices of one user that the strategy says conflict.
            plats = [d.platform if d else UNKNOWN_PLATFORM for _, d in reg.devices_of(user)]
            for a, b in itertools.permutations(plats, 2):
                assert a not in strategy.conflicts([a], b) or isinstance(strategy, AllowAll)
        assert len(reg) == len(model)


_kindsets = st.frozensets(st.sampled_from(list(PlatformKind)), max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(_kindsets, max_size=3),
    combos=st.lists(_kindsets, max_size=3),
    ops=_ops,
)
def test_custom_invariants(
    groups: list[frozenset[PlatformKind]],
    combos: list[frozenset[PlatformKind]],
    ops: list[tuple[str, object, object]],
) -> None:
    reg = DeviceRegistry(Custom(tuple(groups), tuple(combos)))
    ids = itertools.count()
    for op, arg, device in ops:
        if op == "admit":
            assert isinstance(arg, str)
            assert device is None or isinstance(device, DeviceInfo)
            cid = f"c{next(ids)}"
            kicked = reg.admit(cid, arg, device)
            assert all(c.user_id == arg for c in kicked)
            assert reg.devices_of(arg)[-1] == (cid, device)
        else:
            reg.remove(f"c{arg}")
        for user in ("alice", "bob"):
            kinds = [d.platform.kind if d else K.OTHER for _, d in reg.devices_of(user)]
            # Online kinds are a single kind or an allowed combination...
            assert len(set(kinds)) <= 1 or any(set(kinds) <= c for c in combos)
            # ...and each exclusive group has at most one connection online.
            for g in groups:
                assert sum(k in g for k in kinds) <= 1
