"""Wire-level enumerations: serialization format and compression algorithm."""

from __future__ import annotations

import enum


class Format(enum.IntEnum):
    """Serialization format; the value is the ``SystemCommand.format`` number (reference §1.3)."""

    PROTOBUF = 0
    JSON = 1

    @property
    def wire_name(self) -> str:
        """The name used in CONNECT metadata: ``"protobuf"`` or ``"json"``."""
        return "protobuf" if self is Format.PROTOBUF else "json"

    @classmethod
    def parse(cls, text: str) -> Format | None:
        """Parse a metadata value (case-insensitive; ``proto`` accepted); ``None`` if unknown."""
        return _FORMAT_NAMES.get(text.strip().lower())


_FORMAT_NAMES = {"protobuf": Format.PROTOBUF, "proto": Format.PROTOBUF, "json": Format.JSON}


class Compression(enum.StrEnum):
    """Whole-frame compression algorithm; the value is its wire name (reference §3.1)."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"

    @classmethod
    def parse(cls, text: str) -> Compression | None:
        """Parse a wire name (case-insensitive, ``""`` means none); ``None`` if unknown."""
        name = text.strip().lower()
        if name == "":
            return cls.NONE
        try:
            return cls(name)
        except ValueError:
            return None
