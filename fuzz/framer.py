"""Harness 2: :class:`~flare_proto.LengthPrefixFramer` on arbitrary bytes in arbitrary
chunkings, against a reference that slices the whole stream at once.

Invariants: ``receive`` returns payloads or raises :class:`~flare_proto.FrameTooLarge`,
nothing else. The payloads returned, over all calls, are the reference's frames in order;
when a length above ``max_frame`` breaks the stream, the frames completed in the call that
raised are dropped (documented) and every later call raises again. After an end-of-stream
marker (a zero length) ``ended`` is true, nothing is buffered and later data is ignored.
Otherwise ``buffered`` is exactly the bytes after the last complete frame. Memory: the
framer never buffers more than ``max_frame + 3`` bytes (a partial prefix and payload).

Input layout:

====== =================================================================================
byte   meaning
====== =================================================================================
0      bits 0-1: ``max_frame`` 4096 / 4096 / 64 / 1; bits 2-3: chunks passed as bytes,
       bytearray, memoryview, or bytes; bit 4: receive an extra empty chunk between chunks
1      ``n = byte % 8 + 1``: how many chunk sizes follow
2..    ``n`` chunk sizes, one byte each (0 = an empty ``receive``), used in a cycle; if
       all are 0 the whole stream is one chunk
rest   the stream
====== =================================================================================
"""

from __future__ import annotations

from flare_proto import FrameTooLarge, LengthPrefixFramer

from ._input import Reader
from ._invariants import check
from ._seeds import handshake_frames, vector_compressed, vector_frames, vector_stream

__all__ = ["MAX_FRAMES", "MEMORY_LIMIT", "one_input", "reference", "seeds"]

MAX_FRAMES = (4096, 4096, 64, 1)
"""``max_frame`` by control bits 0-1 (4096 is the brief's "small max_frame")."""
MEMORY_LIMIT = 1024 * 1024
"""Peak Python allocation allowed for one input (checked by the smoke test, tracemalloc)."""


def reference(stream: bytes, max_frame: int) -> tuple[list[tuple[bytes, int]], str, int]:
    """Slice the whole ``stream`` at once.

    Returns the frames with the stream offset where each ends, how the stream stops
    (``"ended"``: a zero length at the returned offset; ``"too_large"``: a length above
    ``max_frame`` whose prefix ends at the returned offset; ``"open"``: data ran out, the
    offset is the end of the last complete frame).
    """
    frames: list[tuple[bytes, int]] = []
    pos = 0
    while len(stream) - pos >= 4:
        size = int.from_bytes(stream[pos : pos + 4], "big")
        if size == 0:
            return frames, "ended", pos + 4
        if size > max_frame:
            return frames, "too_large", pos + 4
        if pos + 4 + size > len(stream):
            break
        frames.append((stream[pos + 4 : pos + 4 + size], pos + 4 + size))
        pos += 4 + size
    return frames, "open", pos


def _chunks(sizes: list[int], stream: bytes, empty_between: bool) -> list[bytes]:
    if not any(sizes):
        return [stream]
    out: list[bytes] = []
    pos = index = 0
    while pos < len(stream):
        size = sizes[index % len(sizes)]
        index += 1
        out.append(stream[pos : pos + size])
        pos += size
        if empty_between:
            out.append(b"")
    return out


def one_input(data: bytes) -> None:
    """Feed the stream ``data`` describes in its chunking; raise :class:`Finding` if the
    framer's output differs from :func:`reference` (any other exception escaping is an
    uncaught exception from the framer)."""
    reader = Reader(data)
    control = reader.byte()
    max_frame = MAX_FRAMES[control & 3]
    kind = (control >> 2) & 3
    sizes = [reader.byte() for _ in range(reader.byte() % 8 + 1)]
    stream = reader.rest()
    expected, stop, offset = reference(stream, max_frame)

    framer = LengthPrefixFramer(max_frame=max_frame)
    got: list[bytes] = []
    fed = 0  # stream bytes passed to receive() so far
    for chunk in _chunks(sizes, stream, bool(control & 16)):
        arg: bytes | bytearray | memoryview = chunk
        if kind == 1:
            arg = bytearray(chunk)
        elif kind == 2:
            arg = memoryview(chunk)
        try:
            frames = framer.receive(arg)
        except FrameTooLarge:
            check(stop == "too_large", "FrameTooLarge on a stream without an oversize length")
            check(
                fed < offset <= fed + len(chunk),
                f"FrameTooLarge in the chunk at {fed}, the oversize prefix ends at {offset}",
            )
            # Frames completed in the failing call are dropped with it (documented).
            check(
                got == [payload for payload, end in expected if end <= fed],
                "frames before the failing call differ from the reference",
            )
            check(framer.buffered == 0, "a broken stream still buffers data")
            raised = False
            try:
                framer.receive(b"\x00\x00\x00\x05hello")
            except FrameTooLarge:
                raised = True
            check(raised, "receive() after FrameTooLarge did not raise again")
            return
        fed += len(chunk)
        got += frames
        check(
            framer.buffered <= max_frame + 3,
            f"buffers {framer.buffered} bytes with max_frame {max_frame}",
        )
    check(stop != "too_large", "an oversize length prefix was not refused")
    check(
        got == [payload for payload, _ in expected],
        f"frames differ from the reference: {len(got)} vs {len(expected)}",
    )
    if stop == "ended":
        check(framer.ended, "end-of-stream marker not reported")
        check(framer.buffered == 0, "bytes buffered after the end-of-stream marker")
        check(framer.receive(b"\x00\x00\x00\x01x") == [], "data after the end was returned")
    else:
        check(not framer.ended, "ended without an end-of-stream marker")
        check(
            framer.buffered == len(stream) - offset,
            f"buffered {framer.buffered}, reference leaves {len(stream) - offset}",
        )
    # What came out, framed again and fed in one piece, comes out unchanged.
    if got:
        again = LengthPrefixFramer(max_frame=max_frame)
        check(
            again.receive(b"".join(LengthPrefixFramer.frame(p) for p in got)) == got,
            "re-framed payloads differ",
        )


def seeds() -> list[bytes]:
    """The golden stream and streams built from the golden frames, in several chunkings
    (whole, byte by byte, odd sizes, empty chunks), with and without an end marker, as
    bytes, bytearray and memoryview, and with a max_frame the big SEND is above."""
    golden = vector_stream()
    frames = [*vector_frames(), *vector_compressed(), *handshake_frames()]
    built = b"".join(LengthPrefixFramer.frame(f) for f in frames[:12])
    small = b"".join(LengthPrefixFramer.frame(f) for f in frames if len(f) <= 64)[:600]
    streams = [golden, golden + LengthPrefixFramer.END_OF_STREAM + golden, built, small]
    chunkings = [b"\x00\x00", b"\x00\x01", b"\x02\x07\x01\x40", b"\x03\x00\x05\x00\xff"]
    out: list[bytes] = []
    for index, stream in enumerate(streams):
        for number, chunking in enumerate(chunkings):
            kind = ((index + number) % 4) << 2
            out.append(bytes([kind]) + chunking + stream)
        out.append(bytes([0x10]) + b"\x01\x03" + stream[:200])  # empty chunks between
    out.append(b"\x02\x00\x00" + small)  # max_frame 64
    out.append(b"\x03\x00\x00" + b"\x00\x00\x00\x01a\x00\x00\x00\x01b\x00\x00\x00\x02cd")
    out.append(b"\x00\x00\x00" + b"\x00\x00\x10\x01" + bytes(64))  # 4097 > max_frame
    return list(dict.fromkeys(out))
