"""A small reader of Caffe's two file formats: the binary ``.caffemodel`` (protobuf wire format)
and the deploy ``.prototxt`` (protobuf text format).

Hand-written on purpose: facemetric reads pretrained Caffe weights (OpenCV's res10 SSD face
detector) into native PyTorch modules, and neither ``protobuf`` + ``caffe.proto`` nor Caffe
itself is worth a dependency just to read a file format. Only what a weights file needs is
decoded; everything else is skipped by wire type.

Binary (:func:`read_caffemodel`, :func:`parse_wire`)
----------------------------------------------------
Protobuf wire format: each field is a varint key ``(field_number << 3) | wire_type`` followed by
its value -- wire type 0 varint, 1 fixed 64-bit, 2 length-delimited bytes (strings, nested
messages, packed repeated scalars), 5 fixed 32-bit; 3/4 (groups) are refused. The messages read
(field numbers from Caffe's ``caffe.proto``):

* ``NetParameter``: ``name`` = 1, ``layer`` = 100 (``LayerParameter``), ``layers`` = 2
  (the deprecated ``V1LayerParameter``);
* ``LayerParameter``: ``name`` = 1, ``type`` = 2 (a string), ``bottom`` = 3, ``top`` = 4,
  ``blobs`` = 7; ``V1LayerParameter``: ``bottom`` = 2, ``top`` = 3, ``name`` = 4, ``type`` = 5
  (an enum number), ``blobs`` = 6;
* ``BlobProto``: legacy ``num, channels, height, width`` = 1-4, ``data`` = 5 (float32, packed or
  not), ``diff`` = 6 (skipped), ``shape`` = 7 (``BlobShape``: ``dim`` = 1, int64, packed or
  not), ``double_data`` = 8 (float64). The blob's shape is ``shape.dim`` when present, else the
  legacy 4-D ``(num, channels, height, width)`` (Caffe's rule for old files). The data's element
  count must equal the shape's product.

Text (:func:`parse_prototxt`)
-----------------------------
Protobuf text format: ``name: value`` scalars (numbers, ``"strings"`` with C escapes,
``true``/``false``, enum identifiers), ``name { ... }`` (or ``name: { ... }``) messages,
``#`` comments. Every field becomes a list of its values (protobuf does not say in the text
which fields repeat); :class:`Message` gives ``msg.get("kernel_size", default)`` for the first
value and ``msg.all("bottom")`` for the list.

Errors name the file and the byte offset (binary) or line (text).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError

__all__ = [
    "CaffeLayer",
    "CaffeModel",
    "Message",
    "file_sha1",
    "parse_prototxt",
    "parse_wire",
    "read_caffemodel",
    "read_prototxt",
]

# wire types
VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class WireError(FacemetricError):
    """The bytes are not a valid protobuf message (raised with the byte offset)."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def parse_wire(
    data: bytes | memoryview, start: int = 0, end: int | None = None
) -> list[tuple[int, int, Any]]:
    """The fields of one protobuf message in ``data[start:end]``, in file order:
    ``(field_number, wire_type, value)`` with ``value`` an ``int`` (varint, fixed64 and fixed32
    as unsigned integers) or, for wire type 2, a ``(start, end)`` byte range into ``data`` (a
    nested message, string or packed array; not decoded until asked)."""
    buf = memoryview(data)
    end = len(buf) if end is None else end
    pos = start
    out: list[tuple[int, int, Any]] = []
    while pos < end:
        key_at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {key_at}")
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == FIXED64:
            if pos + 8 > end:
                raise WireError(f"truncated 64-bit field {number} at byte {key_at}")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > end:
                raise WireError(f"truncated 32-bit field {number} at byte {key_at}")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wire == BYTES:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise WireError(
                    f"field {number} at byte {key_at} claims {length} bytes, "
                    f"{end - pos} left in its message"
                )
            value = (pos, pos + length)
            pos += length
        else:
            raise WireError(f"unsupported wire type {wire} (field {number}) at byte {key_at}")
        out.append((number, wire, value))
    return out


def _f32(bits: int) -> float:
    return struct.unpack("<f", bits.to_bytes(4, "little"))[0]


def _f64(bits: int) -> float:
    return struct.unpack("<d", bits.to_bytes(8, "little"))[0]


def _packed_varints(buf: memoryview, start: int, end: int) -> list[int]:
    out = []
    pos = start
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v)
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class CaffeLayer:
    """One layer of a ``.caffemodel``: its name, type (a string; V1 layers give
    ``"V1:<enum number>"``), bottoms, tops and blobs (float32 arrays in Caffe's shapes: a
    convolution's weight is ``[out, in/group, kh, kw]``, a BatchNorm's are mean, variance and the
    one-element scale factor)."""

    name: str
    type: str
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class CaffeModel:
    """A ``.caffemodel``: the net's name and its layers by name (file order)."""

    name: str
    layers: dict[str, CaffeLayer]

    def blobs(self, layer: str) -> list[np.ndarray]:
        """The blobs of ``layer`` (a one-line error when the file has no such layer)."""
        try:
            return self.layers[layer].blobs
        except KeyError:
            raise FacemetricError(f"caffemodel {self.name!r}: no layer {layer!r}") from None


def _blob(buf: memoryview, start: int, end: int) -> np.ndarray:
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    shape: list[int] | None = None
    chunks: list[np.ndarray] = []
    scalars: list[float] = []
    doubles: list[np.ndarray] = []
    for number, wire, value in parse_wire(buf, start, end):
        if number in legacy and wire == VARINT:
            legacy[number] = _signed64(value)
        elif number == 5:  # data: packed (bytes) or one float per field (fixed32)
            if wire == BYTES:
                s, e = value
                if (e - s) % 4:
                    raise WireError(f"blob data of {e - s} bytes is not float32s at byte {s}")
                chunks.append(np.frombuffer(buf[s:e], dtype="<f4"))
            elif wire == FIXED32:
                scalars.append(_f32(value))
        elif number == 8:  # double_data
            if wire == BYTES:
                s, e = value
                doubles.append(np.frombuffer(buf[s:e], dtype="<f8"))
            elif wire == FIXED64:
                doubles.append(np.array([_f64(value)]))
        elif number == 7 and wire == BYTES:  # shape: BlobShape { repeated int64 dim = 1 }
            dims: list[int] = []
            for n2, w2, v2 in parse_wire(buf, *value):
                if n2 == 1 and w2 == VARINT:
                    dims.append(_signed64(v2))
                elif n2 == 1 and w2 == BYTES:
                    dims.extend(_signed64(v) for v in _packed_varints(buf, *v2))
            shape = dims
    if scalars:
        chunks.append(np.asarray(scalars, dtype=np.float32))
    if chunks:
        data = np.concatenate(chunks).astype(np.float32)
    elif doubles:
        data = np.concatenate(doubles).astype(np.float32)
    else:
        data = np.zeros(0, dtype=np.float32)
    if shape is None:
        shape = [legacy[1], legacy[2], legacy[3], legacy[4]]
    if int(np.prod(shape)) != data.size:
        raise WireError(f"blob at byte {start}: shape {tuple(shape)} holds "
                        f"{int(np.prod(shape))} values, data has {data.size}")
    return data.reshape(shape)


def _text(buf: memoryview, rng: tuple[int, int]) -> str:
    return bytes(buf[rng[0]:rng[1]]).decode("utf-8", errors="replace")


def _layer(buf: memoryview, start: int, end: int, v1: bool) -> CaffeLayer:
    name_f, type_f, bottom_f, top_f, blobs_f = (4, 5, 2, 3, 6) if v1 else (1, 2, 3, 4, 7)
    layer = CaffeLayer(name="", type="")
    for number, wire, value in parse_wire(buf, start, end):
        if number == name_f and wire == BYTES:
            layer.name = _text(buf, value)
        elif number == type_f:
            layer.type = f"V1:{value}" if wire == VARINT else _text(buf, value)
        elif number == bottom_f and wire == BYTES:
            layer.bottoms.append(_text(buf, value))
        elif number == top_f and wire == BYTES:
            layer.tops.append(_text(buf, value))
        elif number == blobs_f and wire == BYTES:
            layer.blobs.append(_blob(buf, *value))
    return layer


def parse_caffemodel(data: bytes, name: str = "<bytes>") -> CaffeModel:
    """A ``.caffemodel``'s bytes -> :class:`CaffeModel` (raises a one-line
    :class:`~facemetric.errors.FacemetricError` naming ``name`` for bytes that are not one)."""
    buf = memoryview(data)
    try:
        net_name = ""
        layers: dict[str, CaffeLayer] = {}
        for number, wire, value in parse_wire(buf):
            if number == 1 and wire == BYTES:
                net_name = _text(buf, value)
            elif number in (100, 2) and wire == BYTES:
                layer = _layer(buf, *value, v1=number == 2)
                key = layer.name
                if key in layers:  # unnamed/duplicate names stay distinct
                    key = f"{key}#{len(layers)}"
                layers[key] = layer
    except WireError as exc:
        raise FacemetricError(f"{name}: not a Caffe model ({exc})") from None
    if not layers:
        raise FacemetricError(f"{name}: not a Caffe model (no layers found)")
    return CaffeModel(net_name, layers)


def read_caffemodel(path: str | os.PathLike) -> CaffeModel:
    """Read a ``.caffemodel`` file (see :func:`parse_caffemodel`)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise FacemetricError(f"{os.fspath(path)}: cannot read ({exc.strerror})") from None
    return parse_caffemodel(data, os.fspath(path))


def file_sha1(path: str | os.PathLike) -> str:
    """The hex SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ text format
class Message:
    """A text-format message: ``fields`` maps each name to the list of its values (numbers,
    strings, booleans, enum identifiers as strings, nested :class:`Message` objects)."""

    def __init__(self) -> None:
        self.fields: dict[str, list[Any]] = {}

    def add(self, name: str, value: Any) -> None:
        self.fields.setdefault(name, []).append(value)

    def all(self, name: str) -> list[Any]:
        """Every value of ``name`` (``[]`` when absent)."""
        return list(self.fields.get(name, []))

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of ``name``, or ``default``."""
        values = self.fields.get(name)
        return values[0] if values else default

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def __repr__(self) -> str:
        return f"Message({self.fields!r})"


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<punct>[{}:;,<>\[\]])
      | (?P<word>[A-Za-z0-9_.+\-]+)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            if m:
                out.append(chr(int(m.group(0), 8)))
                i += 1 + len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _scalar(word: str) -> Any:
    low = word.lower()
    if low in ("true", "t"):
        return True
    if low in ("false", "f"):
        return False
    try:
        return int(word, 0) if re.fullmatch(r"[+-]?(0x[0-9a-fA-F]+|\d+)", word) else float(word)
    except ValueError:
        pass
    if low in ("inf", "infinity", "-inf", "-infinity", "nan"):
        return float(low)
    return word  # an enum identifier


def parse_prototxt(text: str, name: str = "<text>") -> Message:
    """Protobuf text format -> :class:`Message` (see the module docstring); errors name
    ``name`` and the line."""
    tokens: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            rest = text[pos:].lstrip()
            if not rest:
                break
            bad_line = line + text.count("\n", pos, len(text) - len(rest))
            raise FacemetricError(f"{name}: line {bad_line}: unexpected {rest[:20]!r}")
        kind = m.lastgroup or ""
        tok = m.group(kind)
        tok_line = line + text.count("\n", pos, m.start(kind))
        if kind != "comment":
            tokens.append((kind, tok, tok_line))
        line += text.count("\n", pos, m.end())
        pos = m.end()

    root = Message()
    stack = [root]
    i = 0

    def fail(msg: str, at: int) -> FacemetricError:
        ln = tokens[at][2] if at < len(tokens) else (tokens[-1][2] if tokens else 1)
        return FacemetricError(f"{name}: line {ln}: {msg}")

    while i < len(tokens):
        kind, tok, _ = tokens[i]
        if kind == "punct" and tok in "}>":
            if len(stack) == 1:
                raise fail("unmatched '}'", i)
            stack.pop()
            i += 1
            continue
        if kind == "punct" and tok in ";,":
            i += 1
            continue
        if kind != "word":
            raise fail(f"expected a field name, got {tok!r}", i)
        field_name = tok
        i += 1
        colon = i < len(tokens) and tokens[i][1] == ":"
        if colon:
            i += 1
        if i >= len(tokens):
            raise fail(f"field {field_name!r} has no value", i)
        kind, tok, _ = tokens[i]
        if kind == "punct" and tok in "{<":
            child = Message()
            stack[-1].add(field_name, child)
            stack.append(child)
            i += 1
        elif kind == "punct" and tok == "[" and colon:  # list syntax: name: [1, 2]
            i += 1
            while i < len(tokens) and tokens[i][1] != "]":
                k2, t2, _ = tokens[i]
                if k2 == "string":
                    stack[-1].add(field_name, _unescape(t2[1:-1]))
                elif k2 == "word":
                    stack[-1].add(field_name, _scalar(t2))
                elif t2 != ",":
                    raise fail(f"unexpected {t2!r} in the list of {field_name!r}", i)
                i += 1
            if i >= len(tokens):
                raise fail(f"unterminated list for {field_name!r}", i)
            i += 1
        elif not colon:
            raise fail(f"expected ':' or '{{' after {field_name!r}, got {tok!r}", i)
        elif kind == "string":
            value = _unescape(tok[1:-1])
            i += 1
            while i < len(tokens) and tokens[i][0] == "string":  # adjacent literals concatenate
                value += _unescape(tokens[i][1][1:-1])
                i += 1
            stack[-1].add(field_name, value)
        elif kind == "word":
            stack[-1].add(field_name, _scalar(tok))
            i += 1
        else:
            raise fail(f"expected a value for {field_name!r}, got {tok!r}", i)
    if len(stack) != 1:
        raise fail("unterminated message (missing '}')", len(tokens))
    return root


def read_prototxt(path: str | os.PathLike) -> Message:
    """Read a ``.prototxt`` file (see :func:`parse_prototxt`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise FacemetricError(f"{os.fspath(path)}: cannot read ({exc})") from None
    return parse_prototxt(text, os.fspath(path))
