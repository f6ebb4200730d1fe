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

import zlib

import zstandard

from ._config import CodecOptions
from ._errors import DecodeError, FrameTooLarge, LocalProtocolError
from ._types import Compression

__all__ = ["GZIP_MAGIC", "ZSTD_MAGIC", "compress", "decompress"]

GZIP_MAGIC = b"\x1f\x8b"
"""First two bytes of every gzip member (RFC 1952)."""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""First four bytes of every zstd frame (RFC 8878)."""

# zlib's wbits for "gzip container only, 32 KiB window" (16 + 15). Auto-detection of
# zlib/raw deflate (wbits 47) is deliberately not used: only real gzip is on the wire.
_GZIP_WBITS = 31

# zstd windows up to this size are always accepted: `zstd -19` (streaming, no declared
# content size) uses an 8 MiB window. Larger windows are accepted up to the output cap.
_ZSTD_MIN_WINDOW_LIMIT = 8 * 1024 * 1024

# ZstdCompressor/ZstdDecompressor objects cost ~15 us to create but ~0.3 us to reuse, and
# one must never be used by two threads at once (they release the GIL while working). So
# they are kept in pools, one list per level / window limit: list.pop() and list.append()
# are atomic, a caller owns what it popped, and a pool grows to the number of threads that
# ever compressed at the same time. (The core imports no `threading`, DESIGN.md §1.)
_compressor_pools: dict[int, list[zstandard.ZstdCompressor]] = {}
_decompressor_pools: dict[int, list[zstandard.ZstdDecompressor]] = {}


def compress(data: bytes, algorithm: Compression, options: CodecOptions) -> bytes:
    """Compress a serialized frame with ``algorithm`` (``NONE`` returns ``data`` unchanged).

    gzip output is one standard RFC 1952 member (zlib's header: mtime 0, OS 3) at
    ``options.gzip_level``; zstd output is one frame at ``options.zstd_level`` with the
    content size written in its header, so receivers can check it before inflating.
    """
    if algorithm is Compression.GZIP:
        return zlib.compress(data, options.gzip_level, _GZIP_WBITS)
    if algorithm is Compression.ZSTD:
        pool = _compressor_pools.setdefault(options.zstd_level, [])
        try:
            cctx = pool.pop()
        except IndexError:
            cctx = zstandard.ZstdCompressor(level=options.zstd_level, write_content_size=True)
        try:
            out: bytes = cctx.compress(data)
        finally:
            pool.append(cctx)
        return out
    if algorithm is Compression.NONE:
        return data
    raise LocalProtocolError(f"unknown compression algorithm {algorithm!r}")


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


# Output is produced (and the cap checked) in slices of this size, so a bomb is refused
# after at most max_size + _CHUNK bytes of output, and a small frame is a single slice.
_CHUNK = 1024 * 1024


def _gunzip(data: bytes, max_size: int) -> bytes:
    # The last 4 bytes of a gzip member are ISIZE, the uncompressed size mod 2**32, never more
    # than the real size. When it announces more than max_size the output is not kept (an
    # honest bomb costs one slice of memory). The data is still inflated up to the cap:
    # truncated or trailing-garbage data ends in arbitrary bytes and must be reported as a
    # DecodeError, not refused as too large on the strength of its last 4 bytes.
    keep = int.from_bytes(data[-4:], "little") <= max_size
    inflater = zlib.decompressobj(_GZIP_WBITS)
    chunks: list[bytes] = []
    total = 0
    pending = data
    try:
        while True:
            chunk = inflater.decompress(pending, _CHUNK)
            total += len(chunk)
            if total > max_size:
                raise FrameTooLarge(f"gzip frame inflates to more than {max_size} bytes")
            if keep:
                chunks.append(chunk)
            pending = inflater.unconsumed_tail
            # A full slice may leave output pending inside zlib even with no input left.
            if inflater.eof or (not pending and len(chunk) < _CHUNK):
                break
    except zlib.error as exc:
        raise DecodeError(f"corrupt gzip data: {exc}") from None
    if not inflater.eof:
        raise DecodeError("truncated gzip data")
    if inflater.unused_data:
        raise DecodeError(f"{len(inflater.unused_data)} bytes after the end of the gzip data")
    if not keep:  # zlib checks ISIZE itself, so this means a mismatch it did not report
        raise DecodeError("gzip size field does not match the data")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _unzstd(data: bytes, max_size: int) -> bytes:
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd frame header: {exc}") from None
    window_limit = _zstd_window_limit(max_size)
    if params.window_size > window_limit:
        # The decoder would allocate the window; refuse before it does.
        raise FrameTooLarge(f"zstd frame needs a {params.window_size}-byte window")
    size = params.content_size
    if size != zstandard.CONTENTSIZE_UNKNOWN and size > max_size:
        raise FrameTooLarge(f"zstd frame declares {size} decompressed bytes (max {max_size})")
    pool = _decompressor_pools.setdefault(window_limit, [])
    try:
        dctx = pool.pop()
    except IndexError:
        dctx = zstandard.ZstdDecompressor(max_window_size=window_limit)
    try:
        return _unzstd_with(dctx, data, size, max_size)
    finally:
        pool.append(dctx)


def _unzstd_with(dctx: zstandard.ZstdDecompressor, data: bytes, size: int, max_size: int) -> bytes:
    if size == zstandard.CONTENTSIZE_UNKNOWN:
        return _unzstd_unknown_size(dctx, data, max_size)
    if size == 0:
        # The one-shot decoder returns b"" for a declared size of 0 without reading the rest
        # of the frame; stream it so that corruption there is noticed.
        if _unzstd_stream(dctx, data):
            raise DecodeError("zstd frame does not match its declared size of 0")
        return b""
    try:
        # With a declared size the decoder allocates exactly that much and fails if the
        # frame produces more or less, so the declaration cannot be used to lie.
        out: bytes = dctx.decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd data: {exc}") from None
    return out


def _unzstd_unknown_size(dctx: zstandard.ZstdDecompressor, data: bytes, max_size: int) -> bytes:
    try:
        # A bounded probe: the decoder gets a max_size output buffer and fails if the frame
        # needs more, or is truncated or corrupt (the error does not say which).
        # max_output_size=0 would mean "unbounded", hence the max().
        dctx.decompress(data, max_output_size=max(max_size, 1))
    except zstandard.ZstdError as exc:
        _unzstd_classify(dctx, data, max_size)
        raise DecodeError(f"corrupt or truncated zstd data: {exc}") from None
    # The frame fits. The probe ignores bytes after the frame's end, so decode it again,
    # streaming (now known to be bounded), to see where it ends. Frames without a declared
    # size come only from foreign encoders; ours always declare it.
    out = _unzstd_stream(dctx, data)
    if len(out) > max_size:  # only when max_size is 0
        raise FrameTooLarge(f"zstd frame inflates to more than {max_size} bytes")
    return out


def _unzstd_stream(dctx: zstandard.ZstdDecompressor, data: bytes) -> bytes:
    # Only for frames whose output is already known to be bounded (see callers).
    inflater = dctx.decompressobj()
    try:
        out: bytes = inflater.decompress(data)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd data: {exc}") from None
    if not inflater.eof:
        raise DecodeError("truncated zstd data")
    if inflater.unused_data:
        raise DecodeError(f"{len(inflater.unused_data)} bytes after the end of the zstd frame")
    return out


def _unzstd_classify(dctx: zstandard.ZstdDecompressor, data: bytes, max_size: int) -> None:
    """After a failed bounded decode: raise FrameTooLarge if the frame really inflates past
    ``max_size`` (output counted in slices and thrown away); return otherwise."""
    total = 0
    try:
        for chunk in dctx.read_to_iter(data, write_size=_CHUNK):
            total += len(chunk)
            if total > max_size:
                raise FrameTooLarge(f"zstd frame inflates to more than {max_size} bytes")
    except zstandard.ZstdError:
        pass  # corrupt: the caller reports the original error


def _zstd_window_limit(max_size: int) -> int:
    # Smallest power of two >= max_size, but never below the 8 MiB that ordinary encoders
    # use without declaring a content size (decision recorded in docs/decisions.md).
    return max(_ZSTD_MIN_WINDOW_LIMIT, 1 << max(0, max_size - 1).bit_length())
