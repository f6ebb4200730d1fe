"""Device identity carried in CONNECT metadata (reference §5.1, §7.1)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class PlatformKind(enum.Enum):
    """The known platform families; anything else is ``OTHER`` with its own name."""

    WEB = "web"
    PC = "pc"
    H5 = "h5"
    ANDROID = "android"
    IOS = "ios"
    HARMONYOS = "harmonyos"
    OTHER = "other"


_ALIASES = {
    "web": PlatformKind.WEB,
    "pc": PlatformKind.PC,
    "desktop": PlatformKind.PC,
    "h5": PlatformKind.H5,
    "mobile_web": PlatformKind.H5,
    "android": PlatformKind.ANDROID,
    "ios": PlatformKind.IOS,
    "iphone": PlatformKind.IOS,
    "ipad": PlatformKind.IOS,
    "harmonyos": PlatformKind.HARMONYOS,
    "harmony": PlatformKind.HARMONYOS,
    "openharmony": PlatformKind.HARMONYOS,
}
_MOBILE = frozenset(
    {PlatformKind.H5, PlatformKind.ANDROID, PlatformKind.IOS, PlatformKind.HARMONYOS}
)
# The original's Rust Debug spelling, used in KICKED metadata ``platform`` (reference §5.1).
_DEBUG = {
    PlatformKind.WEB: "Web",
    PlatformKind.PC: "PC",
    PlatformKind.H5: "H5",
    PlatformKind.ANDROID: "Android",
    PlatformKind.IOS: "IOS",
    PlatformKind.HARMONYOS: "HarmonyOS",
}


@dataclass(frozen=True, slots=True)
class Platform:
    """A device platform. ``Platform.parse("iPhone") == Platform(PlatformKind.IOS)``.

    For ``OTHER`` the lower-cased name is kept in ``other`` (v0.1.2 lower-cases it), so two
    ``Other`` platforms are equal only when their names are.
    """

    kind: PlatformKind
    other: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse a CONNECT ``platform`` value (case-insensitive, aliases per reference §7.1)."""
        name = text.strip().lower()
        kind = _ALIASES.get(name)
        if kind is not None:
            return cls(kind)
        return cls(PlatformKind.OTHER, name or "unknown")

    @property
    def is_mobile(self) -> bool:
        """H5, Android, iOS and HarmonyOS are mobile."""
        return self.kind in _MOBILE

    @property
    def wire_name(self) -> str:
        """The string sent as CONNECT metadata ``platform``."""
        return self.other if self.kind is PlatformKind.OTHER else self.kind.value

    @property
    def debug_name(self) -> str:
        """The original's Debug form used in KICKED metadata: ``IOS``, ``Other("xyz")``."""
        if self.kind is PlatformKind.OTHER:
            return f'Other("{self.other}")'
        return _DEBUG[self.kind]

    def __str__(self) -> str:
        return self.wire_name


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """A device as announced in CONNECT. ``extra`` holds the other non-protocol metadata.

    The token is never part of it (B4): it is carried separately and kept out of reprs.
    """

    device_id: str
    platform: Platform
    model: str = ""
    app_version: str = ""
    system_version: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        """The CONNECT metadata entries that describe this device (empty values omitted)."""
        meta = dict(self.extra)
        meta["device_id"] = self.device_id
        meta["platform"] = self.platform.wire_name
        for key in ("model", "app_version", "system_version"):
            value: str = getattr(self, key)
            if value:
                meta[key] = value
        return meta
