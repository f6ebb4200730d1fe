"""Device-conflict strategies and the per-user device registry (DESIGN.md §3.5-3.6).

Theory of operation
-------------------
A *strategy* is a pure rule (reference §7.2): given the set of platforms a user already has
online and the platform of a new connection, it names the *platforms* to kick. It never sees
connection ids, device ids or users; device ids are not used for matching.

The `DeviceRegistry` maps user id → {connection id → device}, in registration order. The
server calls `DeviceRegistry.admit` once per connection, **after** the connection was
accepted and with the **authenticated** user id (the claimed one only when auth is disabled),
so a rejected or unauthenticated client can never kick anyone and nobody can kick another
user's devices by claiming their id (bugs B1, B2). `admit` removes every connection of that
user whose platform the strategy named, registers the new one, and returns one `Conflict`
per removed connection. The server then sends each of them KICKED (text and metadata from
`kick_notice`), closes them (B6, B11), and only then sends CONNECT_ACK with
``conflict_connections`` to the new one (reference §7.3). `remove` is called when a
connection ends for any reason.

Everything here is pure: no I/O, no clock, no randomness. An admit costs O(devices of that
user).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from ._device_info import DeviceInfo, Platform, PlatformKind

__all__ = [
    "STRATEGY_NAMES",
    "UNKNOWN_PLATFORM",
    "AllowAll",
    "Conflict",
    "Custom",
    "DeviceRegistry",
    "DeviceStrategy",
    "FullyExclusive",
    "MobileExclusive",
    "MobilePcCoexist",
    "PlatformExclusive",
    "kick_notice",
    "strategy_from_name",
]

UNKNOWN_PLATFORM = Platform(PlatformKind.OTHER, "unknown")
"""Platform of a connection without device info, as for a CONNECT without ``platform`` (§5.1)."""

_DESKTOP = frozenset({PlatformKind.WEB, PlatformKind.PC})


@runtime_checkable
class DeviceStrategy(Protocol):
    """A device-conflict rule (reference §7.2). The built-in ones are frozen dataclasses."""

    @property
    def name(self) -> str:
        """Short name: the CLI spelling (``platform-exclusive``) or ``custom``."""
        ...

    def conflicts(self, existing: Collection[Platform], new: Platform) -> set[Platform]:
        """The platforms among `existing` whose connections must be kicked for `new`."""
        ...


@dataclass(frozen=True, slots=True)
class AllowAll:
    """Never kicks anyone (the default)."""

    name: ClassVar[str] = "allow-all"

    def conflicts(self, existing: Collection[Platform], new: Platform) -> set[Platform]:
        """Always empty."""
        return set()


@dataclass(frozen=True, slots=True)
class PlatformExclusive:
    """One connection per platform: a new iOS connection kicks the user's iOS connection(s).

    This includes the same device reconnecting on a new connection (§7.2). ``Other`` platforms
    match by name: ``Other("x")`` kicks ``Other("x")``, not ``Other("y")``.
    """

    name: ClassVar[str] = "platform-exclusive"

    def conflicts(self, existing: Collection[Platform], new: Platform) -> set[Platform]:
        """``{new}`` if `new` is already present, else empty."""
        return {new} if new in existing else set()


@dataclass(frozen=True, slots=True)
class MobileExclusive:
    """One mobile connection (H5, Android, iOS, HarmonyOS); Web, PC and Other never conflict."""

    name: ClassVar[str] = "mobile-exclusive"

    def conflicts(self, existing: Collection[Platform], new: Platform) -> set[Platform]:
        """Every existing mobile platform when `new` is mobile, else empty."""
        if not new.is_mobile:
            return set()
        return {p for p in existing if p.is_mobile}


@dataclass(frozen=True, slots=True)
class FullyExclusive:
    """One connection per user: any new connection kicks all the others."""

    name: ClassVar[str] = "fully-exclusive"

    def conflicts(self, existing: Collection[Platform], new: Platform) -> set[Platform]:
        """Every existing platform."""
        return set(existing)


@dataclass(frozen=True, slots=True)
class MobilePcCoexist:
    """One mobile plus one desktop (Web or PC) connection per user (``MobileAndPcCoexist``).

    New mobile → kick existing mobiles; new Web or PC → kick existing Web and PC (they exclude
    each other); new ``Other(x)`` → kick an existing ``Other(x)`` with the same name (§7.2).
    """

    name: ClassVar[str] = "mobile-pc-coexist"

    def conflicts(self, existing: Collection[Platform], new: Platform) -> set[Platform]:
        """The existing platforms in the same family as `new` (see the class docstring)."""
        if new.is_mobile:
            return {p for p in existing if p.is_mobile}
        if new.kind in _DESKTOP:
            return {p for p in existing if p.kind in _DESKTOP}
        return {new} if new in existing else set()


@dataclass(frozen=True, slots=True)
class Custom:
    """Exclusive groups plus a whitelist of platform combinations that may be online together.

    Both are expressed in `PlatformKind`; every ``Other(x)`` platform is of kind ``OTHER``
    whatever its name, so ``Other("x")`` and ``Other("y")`` are treated like two devices of one
    platform.

    The rule, for a new platform of kind *k*:

    1. for every group containing *k*, kick the existing platforms whose kind is in that group;
    2. with the platforms left after step 1, if {kinds left} ∪ {*k*} holds more than one kind
       and no allowed combination is a superset of it, kick **all** existing platforms.

    Step 2 looks at what would really be online after step 1, so the user's set of platforms
    is always a single kind or an allowed combination. (The original returns early from step 1
    and skips step 2 whenever a group kicked something, and stops at the first group.)
    As in the original, an empty `allowed_combinations` allows no mixed set at all; to use
    exclusive groups alone, allow every kind: ``allowed_combinations=(frozenset(PlatformKind),)``.
    """

    exclusive_groups: tuple[frozenset[PlatformKind], ...] = ()
    allowed_combinations: tuple[frozenset[PlatformKind], ...] = ()
    name: ClassVar[str] = "custom"

    def __post_init__(self) -> None:
        for label, sets in (
            ("exclusive_groups", self.exclusive_groups),
            ("allowed_combinations", self.allowed_combinations),
        ):
            if not isinstance(sets, tuple) or not all(
                isinstance(s, frozenset) and all(isinstance(k, PlatformKind) for k in s)
                for s in sets
            ):
                raise TypeError(f"{label} must be a tuple of frozensets of PlatformKind")

    def conflicts(self, existing: Collection[Platform], new: Platform) -> set[Platform]:
        """The platforms to kick per the two steps in the class docstring."""
        kicked: set[Platform] = set()
        for group in self.exclusive_groups:
            if new.kind in group:
                kicked.update(p for p in existing if p.kind in group)
        kinds = {p.kind for p in existing if p not in kicked}
        kinds.add(new.kind)
        if len(kinds) > 1 and not any(kinds <= combo for combo in self.allowed_combinations):
            return set(existing)
        return kicked


_BY_NAME: dict[str, DeviceStrategy] = {
    s.name: s
    for s in (
        AllowAll(),
        PlatformExclusive(),
        MobileExclusive(),
        FullyExclusive(),
        MobilePcCoexist(),
    )
}
STRATEGY_NAMES: tuple[str, ...] = tuple(_BY_NAME)
"""The names `strategy_from_name` accepts (``flare serve --devices``)."""


def strategy_from_name(name: str) -> DeviceStrategy:
    """The built-in strategy called `name` (e.g. ``"mobile-pc-coexist"``).

    Case-insensitive; ``_`` may stand for ``-``. `Custom` has no name form (it needs code).
    Raises `ValueError` naming the valid names otherwise.
    """
    strategy = _BY_NAME.get(name.strip().lower().replace("_", "-"))
    if strategy is None:
        raise ValueError(
            f"unknown device strategy {name!r}; valid names: {', '.join(STRATEGY_NAMES)}"
        )
    return strategy


@dataclass(frozen=True, slots=True)
class Conflict:
    """A connection removed from the registry because a newer one conflicted with it.

    The server sends it KICKED and closes it (DESIGN.md §3.6).
    """

    connection_id: str
    user_id: str
    device: DeviceInfo | None

    @property
    def platform(self) -> Platform:
        """The platform it was registered under (`UNKNOWN_PLATFORM` without device info)."""
        return _platform_of(self.device)


def _platform_of(device: DeviceInfo | None) -> Platform:
    return UNKNOWN_PLATFORM if device is None else device.platform


@dataclass(slots=True)
class _Entry:
    device: DeviceInfo | None
    platform: Platform


class DeviceRegistry:
    """Which connections each user has online, and who gets kicked when another arrives.

    A connection without device info is registered under `UNKNOWN_PLATFORM`
    (``Other("unknown")``), exactly like a CONNECT that names a device but no platform (§5.1):
    it still counts, so leaving device info out is no way around an exclusive strategy (the
    original skipped the check entirely, which is the same hole as B1's token-only clients).
    """

    __slots__ = ("_by_user", "_strategy", "_user_of")

    def __init__(self, strategy: DeviceStrategy | None = None) -> None:
        self._strategy: DeviceStrategy = AllowAll() if strategy is None else strategy
        self._by_user: dict[str, dict[str, _Entry]] = {}
        self._user_of: dict[str, str] = {}

    @property
    def strategy(self) -> DeviceStrategy:
        """The strategy applied by `admit`."""
        return self._strategy

    def admit(self, connection_id: str, user_id: str, device: DeviceInfo | None) -> list[Conflict]:
        """Register an accepted connection and return the ones it displaces.

        Call it only once the connection is accepted, with the authenticated user id (B1, B2).
        Every connection of `user_id` whose platform the strategy names is removed and
        returned, in registration order; connections of other users are never touched.

        Raises `ValueError` if `connection_id` is already registered or `user_id` is empty
        (an anonymous connection has no devices to manage; don't admit it).
        """
        if connection_id in self._user_of:
            raise ValueError(f"connection {connection_id!r} is already registered")
        if not user_id:
            raise ValueError("user_id must not be empty")
        platform = _platform_of(device)
        conns = self._by_user.get(user_id)
        conflicts: list[Conflict] = []
        if conns is None:
            conns = self._by_user[user_id] = {}
        else:
            # §7.2: the strategy names platforms; every connection on one of them goes.
            doomed = self._strategy.conflicts({e.platform for e in conns.values()}, platform)
            if doomed:
                for cid, entry in list(conns.items()):
                    if entry.platform in doomed:
                        del conns[cid]
                        del self._user_of[cid]
                        conflicts.append(
                            Conflict(connection_id=cid, user_id=user_id, device=entry.device)
                        )
        conns[connection_id] = _Entry(device, platform)
        self._user_of[connection_id] = user_id
        return conflicts

    def remove(self, connection_id: str) -> None:
        """Forget a connection (closed, kicked, timed out). Unknown ids are ignored."""
        user_id = self._user_of.pop(connection_id, None)
        if user_id is None:
            return
        conns = self._by_user[user_id]
        del conns[connection_id]
        if not conns:
            del self._by_user[user_id]

    def devices_of(self, user_id: str) -> list[tuple[str, DeviceInfo | None]]:
        """``(connection_id, device)`` for each connection of `user_id`, oldest first."""
        conns = self._by_user.get(user_id)
        if conns is None:
            return []
        return [(cid, entry.device) for cid, entry in conns.items()]

    def user_of(self, connection_id: str) -> str | None:
        """The user a registered connection belongs to, else ``None``."""
        return self._user_of.get(connection_id)

    def users(self) -> Iterable[str]:
        """The users with at least one registered connection."""
        return self._by_user.keys()

    def __len__(self) -> int:
        """The number of registered connections."""
        return len(self._user_of)

    def __contains__(self, connection_id: object) -> bool:
        """Whether `connection_id` is registered."""
        return connection_id in self._user_of

    def __repr__(self) -> str:
        return (
            f"<DeviceRegistry strategy={self._strategy.name} users={len(self._by_user)} "
            f"connections={len(self._user_of)}>"
        )


def kick_notice(
    user_id: str, new_device: DeviceInfo | None, kicked_platform: Platform | None
) -> tuple[str, dict[str, str]]:
    """The KICKED ``message`` text and metadata for a displaced connection (§5.1, §7.3).

    Text: ``device conflict: user {user_id} already online on {platform}`` with the kicked
    connection's platform wire name (``unknown`` when ``None``). English, unlike the original's
    fixed Chinese sentence (which also claimed "same platform" under every strategy).
    Metadata: ``reason`` = ``device_conflict``; with a new device also ``platform`` (the new
    device's platform in the original's Debug form, e.g. ``IOS``) and ``new_device_id``.
    """
    where = (kicked_platform or UNKNOWN_PLATFORM).wire_name
    text = f"device conflict: user {user_id} already online on {where}"
    meta = {"reason": "device_conflict"}
    if new_device is not None:
        meta["platform"] = new_device.platform.debug_name
        meta["new_device_id"] = new_device.device_id
    return text, meta
