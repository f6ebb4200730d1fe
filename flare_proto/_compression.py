"""Whole-frame compression: gzip and zstd, detected by magic, with a bounded decompressor.

The whole serialized frame is compressed; nothing on the wire says so except the magic bytes
at its start (reference §3.2, DESIGN.md §2): ``1f 8b`` is gzip, ``28 b5 2f fd`` is zstd.
Unlike the original (gzip unbounded at v0.1.2, zstd a no-op, B13) both algorithms are real
and the decompressed size is capped *before* the output is allocated, so a small "bomb"
frame is refused instead of inflated.

Only one layer is removed: a gzip member inside a gzip member comes out as gzip bytes, which
the codec then fails to parse as a frame.
"""

from __future__ import annotations

import threading
import zlib

import zstandard

from ._config import CodecOptions
from ._errors import DecodeError, FrameTooLarge
from ._types import Compression

__all__ = ["GZIP_MAGIC", "ZSTD_MAGIC", "compress", "decompress"]

GZIP_MAGIC = b"\x1f\x8b"
"""First two bytes of every gzip member (RFC 1952)."""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""First four bytes of every zstd frame (RFC 8878)."""

# zlib's wbits for "gzip container only, 32 KiB window" (16 + 15). Auto-detection of
# zlib/raw deflate (wbits 47) is deliberately not used: only real gzip is on the wire.
_GZIP_WBITS = 31

# Largest output of one zstd block (RFC 8878 §3.1.1.2.4: Block_Maximum_Size <= 128 KiB).
_ZSTD_BLOCK_MAX = 128 * 1024
# Smallest zstd block on the wire: 3-byte header plus at least one byte (RLE block).
_ZSTD_MIN_BLOCK_BYTES = 4
# zstd windows up to this size are always accepted: `zstd -19` (streaming, no declared
# content size) uses an 8 MiB window. Larger windows are accepted up to the output cap.
_ZSTD_MIN_WINDOW_LIMIT = 8 * 1024 * 1024

# ZstdCompressor/ZstdDecompressor objects cost ~15 us to create but ~0.3 us to reuse, and
# must not be shared between threads (they release the GIL while working): cache them per
# thread, keyed by level / window limit.
_local = threading.local()


def compress(data: bytes, algorithm: Compression, options: CodecOptions) -> bytes:
    """Compress a serialized frame with ``algorithm`` (``NONE`` returns ``data`` unchanged).

    gzip output is one standard RFC 1952 member (zlib's header: mtime 0, OS 3) at
    ``options.gzip_level``; zstd output is one frame at ``options.zstd_level`` with the
    content size written in its header, so receivers can check it before inflating.
    """
    if algorithm is Compression.GZIP:
        return zlib.compress(data, options.gzip_level, _GZIP_WBITS)
    if algorithm is Compression.ZSTD:
        return _zstd_compressor(options.zstd_level).compress(data)
    if algorithm is Compression.NONE:
        return data
    raise ValueError(f"unknown compression algorithm {algorithm!r}")


def decompress(data: bytes, max_size: int) -> tuple[bytes, Compression]:
    """Remove one compression layer, detected by magic; return the bytes and the algorithm.

    Data without a known magic is returned unchanged with ``Compression.NONE``. The output is
    capped at ``max_size`` bytes (exactly ``max_size`` is allowed) and the cap is enforced
    before more is allocated.

    Raises:
        FrameTooLarge: the decompressed data would be larger than ``max_size``.
        DecodeError: corrupt or truncated compressed data, or bytes after its end.
    """
    if data[:2] == GZIP_MAGIC:
        return _gunzip(data, max_size), Compression.GZIP
    if data[:4] == ZSTD_MAGIC:
        return _unzstd(data, max_size), Compression.ZSTD
    return data, Compression.NONE


def _gunzip(data: bytes, max_size: int) -> bytes:
    # The last 4 bytes of a gzip member are ISIZE, the input size mod 2**32, never more than
    # the real size. When it announces too much, the frame is only measured (output thrown
    # away chunk by chunk), so an honest bomb costs no memory. It is not refused on ISIZE
    # alone because truncated or trailing-garbage data ends in arbitrary bytes and must be
    # reported as a DecodeError, not as too large.
    if int.from_bytes(data[-4:], "little") > max_size:
        _gunzip_measure(data, max_size)
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        # max_length bounds the allocation; one byte more than allowed tells "too large"
        # apart from "exactly max_size".
        out = inflater.decompress(data, max_size + 1)
    except zlib.error as exc:
        raise DecodeError(f"corrupt gzip data: {exc}") from None
    if len(out) > max_size:
        raise FrameTooLarge(f"gzip frame inflates to more than {max_size} bytes")
    if not inflater.eof:
        raise DecodeError("truncated gzip data")
    if inflater.unused_data:
        raise DecodeError(f"{len(inflater.unused_data)} bytes after the end of the gzip data")
    return out


_MEASURE_CHUNK = 1024 * 1024


def _gunzip_measure(data: bytes, max_size: int) -> None:
    # Inflate without keeping the output; raise whatever the data deserves. A stream that
    # ends within the cap would contradict its ISIZE, which zlib itself rejects.
    inflater = zlib.decompressobj(_GZIP_WBITS)
    total = 0
    pending = data
    try:
        while True:
            produced = len(inflater.decompress(pending, _MEASURE_CHUNK))
            total += produced
            if total > max_size:
                raise FrameTooLarge(f"gzip frame inflates to more than {max_size} bytes")
            pending = inflater.unconsumed_tail
            # A full chunk may leave output pending inside zlib even with no input left.
            if inflater.eof or (not pending and produced < _MEASURE_CHUNK):
                break
    except zlib.error as exc:
        raise DecodeError(f"corrupt gzip data: {exc}") from None
    if not inflater.eof:
        raise DecodeError("truncated gzip data")
    raise DecodeError("bytes after the end of the gzip data")


def _unzstd(data: bytes, max_size: int) -> bytes:
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd frame header: {exc}") from None
    window_limit = _zstd_window_limit(max_size)
    if params.window_size > window_limit:
        # The decoder would allocate the window; refuse before it does.
        raise FrameTooLarge(f"zstd frame needs a {params.window_size}-byte window")
    dctx = _zstd_decompressor(window_limit)
    size = params.content_size
    # A declared size of 0 goes the streaming way: the one-shot decoder returns b"" for it
    # without reading the rest of the frame, so corruption there would go unnoticed.
    if size != zstandard.CONTENTSIZE_UNKNOWN and size:
        if size > max_size:
            raise FrameTooLarge(f"zstd frame declares {size} decompressed bytes (max {max_size})")
        # With a declared size the one-shot decoder allocates exactly that much and fails if
        # the frame produces more or less, so the declaration cannot be used to lie.
        try:
            return dctx.decompress(data, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise DecodeError(f"corrupt zstd data: {exc}") from None
    return _unzstd_streaming(dctx, data, max_size)


def _unzstd_streaming(dctx: zstandard.ZstdDecompressor, data: bytes, max_size: int) -> bytes:
    # No declared size: feed the input in slices small enough that the output of one slice
    # cannot exceed the remaining budget by much. A slice of k bytes completes at most
    # 1 + k/4 blocks of at most 128 KiB each, so the overshoot is bounded (< 1 MiB).
    inflater = dctx.decompressobj()
    view = memoryview(data)
    chunks: list[bytes] = []
    total = 0
    pos = 0
    end = len(data)
    try:
        while pos < end and not inflater.eof:
            step = max(16, (max_size - total) // _ZSTD_BLOCK_MAX * _ZSTD_MIN_BLOCK_BYTES)
            chunk = inflater.decompress(view[pos : pos + step])
            pos += step
            total += len(chunk)
            if total > max_size:
                raise FrameTooLarge(f"zstd frame inflates to more than {max_size} bytes")
            chunks.append(chunk)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd data: {exc}") from None
    finally:
        view.release()
    if not inflater.eof:
        raise DecodeError("truncated zstd data")
    if inflater.unused_data or pos < end:
        raise DecodeError("bytes after the end of the zstd frame")
    return b"".join(chunks)


def _zstd_window_limit(max_size: int) -> int:
    # Smallest power of two >= max_size, but never below the 8 MiB that ordinary encoders
    # use without declaring a content size (decision recorded in docs/decisions.md).
    return max(_ZSTD_MIN_WINDOW_LIMIT, 1 << max(0, max_size - 1).bit_length())


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cctx


def _zstd_decompressor(window_limit: int) -> zstandard.ZstdDecompressor:
    cache: dict[int, zstandard.ZstdDecompressor] | None = getattr(_local, "decompressors", None)
    if cache is None:
        cache = _local.decompressors = {}
    dctx = cache.get(window_limit)
    if dctx is None:
        dctx = cache[window_limit] = zstandard.ZstdDecompressor(max_window_size=window_limit)
    return dctx
