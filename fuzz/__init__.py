"""Fuzz harnesses for flare's sans-IO core (issue 5 §1). Run them with ``python -m fuzz``.

Four harnesses, each a module with ``one_input(data: bytes) -> None`` that raises only on
a finding, ``seeds()`` (inputs built from the golden vectors) and ``MEMORY_LIMIT``:

* :mod:`fuzz.decode`: ``decode_frame`` on raw, gzip- and zstd-wrapped bytes, with a
  re-encode/re-decode round trip;
* :mod:`fuzz.framer`: ``LengthPrefixFramer`` in arbitrary chunkings against a reference;
* :mod:`fuzz.server`: a ``ServerConnection`` after a valid handshake, fed arbitrary bytes;
* :mod:`fuzz.client`: a ``ClientConnection`` after CONNECT (before and after the ACK),
  fed arbitrary server bytes.

This package module imports nothing from ``flare_proto`` (the atheris worker imports the
core under coverage instrumentation first); see ``fuzz/README.md``.
"""

from __future__ import annotations

from ._targets import TARGETS, Harness, load

__all__ = ["TARGETS", "Harness", "load"]
