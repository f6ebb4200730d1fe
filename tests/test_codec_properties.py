"""Property tests of the codec: round trips, serde JSON shape and escaping, robustness."""

from __future__ import annotations

import json
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_proto import (
    CodecOptions,
    Compression,
    DecodeError,
    Format,
    Frame,
    decode_frame,
    encode_frame,
    serialize,
)
from flare_proto._json import frame_from_json, frame_to_json
from flare_proto.testing import compressions, formats, frames, garbage, texts

SETTINGS = settings(max_examples=150, deadline=None)
ALWAYS = CodecOptions(compress_min_bytes=0)


@SETTINGS
@given(frames(), formats(), compressions())
def test_round_trip_always_compressed(frame: Frame, fmt: Format, compression: Compression) -> None:
    if not serialize(frame, fmt):
        return  # an all-default frame is no bytes in protobuf, and no bytes is not a frame
    data = encode_frame(frame, fmt, compression, ALWAYS)
    assert decode_frame(data) == (frame, fmt, compression)


@SETTINGS
@given(frames(), formats(), compressions())
def test_round_trip_default_threshold(frame: Frame, fmt: Format, compression: Compression) -> None:
    data = encode_frame(frame, fmt, compression)
    plain = serialize(frame, fmt)
    if len(plain) < CodecOptions().compress_min_bytes:
        assert data == plain
    if not data:
        return
    decoded, got_fmt, got_compression = decode_frame(data)
    assert decoded == frame
    assert got_fmt is fmt
    assert got_compression is (compression if data != plain else Compression.NONE)


def reference_serde(message: Message) -> dict[str, Any]:
    """An independent serde-shape oracle driven by the descriptors (reference §2.2)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.containing_oneof is not None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = {k: list(v) for k, v in value.items()}
        elif field.message_type is not None:  # Frame.command
            if not message.HasField(field.name):
                out[field.name] = None
            else:
                variant = value.WhichOneof("type")
                inner = (
                    None if variant is None else {variant: reference_serde(getattr(value, variant))}
                )
                out[field.name] = {"type": inner}
        elif field.type == FieldDescriptor.TYPE_BYTES:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


@SETTINGS
@given(frames())
def test_json_is_serde_shape_byte_for_byte(frame: Frame) -> None:
    # json.dumps(ensure_ascii=False, compact) escapes exactly like serde_json: `"`, `\`,
    # \b \f \n \r \t and other control characters as lowercase \u00XX; nothing else.
    expected = json.dumps(reference_serde(frame), ensure_ascii=False, separators=(",", ":"))
    assert frame_to_json(frame) == expected.encode()


@settings(max_examples=300, deadline=None)
@given(texts(200))
def test_orjson_escapes_strings_like_serde(text: str) -> None:
    assert orjson.dumps(text) == json.dumps(text, ensure_ascii=False).encode()


def test_orjson_escapes_every_control_character_like_serde() -> None:
    text = "".join(map(chr, range(0x80))) + "\u2028\u2029\U0001f600é"
    assert orjson.dumps(text) == json.dumps(text, ensure_ascii=False).encode()


@SETTINGS
@given(frames())
def test_json_key_order_is_declaration_order(frame: Frame) -> None:
    pairs = json.loads(frame_to_json(frame), object_pairs_hook=lambda p: [k for k, _ in p])
    assert pairs[:2] == ["command", "message_id"]
    assert pairs[2:] == ["reliability", "timestamp", "metadata"]


@SETTINGS
@given(frames())
def test_json_text_and_bytes_inputs_agree(frame: Frame) -> None:
    data = frame_to_json(frame)
    assert frame_from_json(data.decode()) == frame_from_json(data) == frame


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), garbage()))
def test_decode_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    try:
        frame, fmt, compression = decode_frame(data)
    except DecodeError:
        return
    assert isinstance(frame, Frame)
    assert fmt in Format
    assert compression in Compression


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "command",
                    "type",
                    "system",
                    "message",
                    "custom",
                    "notification",
                    "payload",
                    "metadata",
                    "data",
                    "seq",
                    "reliability",
                    "timestamp",
                    "message_id",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_json_documents_decode_or_raise_decode_error(value: Any) -> None:
    document = json.dumps(value).encode()
    try:
        frame = frame_from_json(document)
    except DecodeError as exc:
        assert str(exc)
        return
    assert isinstance(frame, Frame)


@SETTINGS
@given(frames(), st.data())
def test_json_with_one_value_replaced_decodes_or_names_the_problem(
    frame: Frame, data: st.DataObject
) -> None:
    document = json.loads(frame_to_json(frame))
    leaves: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                leaves.append((node, key))
                collect(child)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                leaves.append((node, index))
                collect(child)

    collect(document)
    parent, key = data.draw(st.sampled_from(leaves))
    parent[key] = data.draw(
        st.none() | st.booleans() | st.floats() | st.text(max_size=3) | st.integers()
    )
    try:
        frame_from_json(json.dumps(document))  # json: ints beyond 64 bits too
    except DecodeError as exc:
        assert "invalid JSON frame" not in str(exc)  # the slow path found the exact problem
