"""The Caffe reader on hand-built messages: protobuf wire format (varints, packed and unpacked
repeated fields, nested messages, unknown fields skipped by wire type) and the text format."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from facemetric.detect.caffe import (
    parse_caffemodel,
    parse_prototxt,
    parse_wire,
    read_caffemodel,
    read_prototxt,
)
from facemetric.errors import FacemetricError


# -- a minimal protobuf encoder (the test's own, independent of the reader) --------------------
def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def vint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def ld(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def text(number: int, s: str) -> bytes:
    return ld(number, s.encode())


def f32(number: int, value: float) -> bytes:
    return key(number, 5) + struct.pack("<f", value)


def f64(number: int, value: float) -> bytes:
    return key(number, 1) + struct.pack("<d", value)


def packed_floats(number: int, values) -> bytes:
    return ld(number, np.asarray(values, dtype="<f4").tobytes())


def blob_shape(dims, packed=True) -> bytes:
    if packed:
        return ld(7, ld(1, b"".join(varint(d) for d in dims)))
    return ld(7, b"".join(vint(1, d) for d in dims))


def test_varints_and_wire_types():
    msg = vint(1, 300) + f32(2, 1.5) + f64(3, -2.25) + text(4, "hé") + vint(5, (1 << 64) - 1)
    fields = parse_wire(msg)
    assert [(n, w) for n, w, _ in fields] == [(1, 0), (2, 5), (3, 1), (4, 2), (5, 0)]
    assert fields[0][2] == 300  # 0xAC 0x02
    assert varint(300) == b"\xac\x02"
    assert struct.unpack("<f", fields[1][2].to_bytes(4, "little"))[0] == 1.5
    assert struct.unpack("<d", fields[2][2].to_bytes(8, "little"))[0] == -2.25
    s, e = fields[3][2]
    assert msg[s:e].decode() == "hé"
    assert fields[4][2] == (1 << 64) - 1


def test_layers_blobs_shapes_and_unknown_fields():
    w = np.arange(2 * 3 * 1 * 2, dtype=np.float32).reshape(2, 3, 1, 2) - 5.5
    conv = (text(1, "conv1") + text(2, "Convolution") + text(3, "data") + text(4, "conv1")
            + ld(7, blob_shape([2, 3, 1, 2]) + packed_floats(5, w.ravel()))   # packed data
            + ld(7, blob_shape([2], packed=False) + f32(5, 0.25) + f32(5, -1.0))  # unpacked data
            + ld(6, b"\x08\x01") + vint(10, 1))  # unknown fields (phase, param) skipped
    bn = (text(1, "bn") + text(2, "BatchNorm")
          + ld(7, vint(1, 1) + vint(2, 3) + vint(3, 1) + vint(4, 1) + packed_floats(5, [1, 2, 3]))  # legacy dims
          + ld(7, blob_shape([1]) + ld(8, np.array([999.5], "<f8").tobytes())))  # double_data
    net = text(1, "tiny") + ld(100, conv) + vint(5, 7) + ld(100, bn)
    model = parse_caffemodel(net)
    assert model.name == "tiny"
    assert list(model.layers) == ["conv1", "bn"]
    c = model.layers["conv1"]
    assert (c.type, c.bottoms, c.tops) == ("Convolution", ["data"], ["conv1"])
    np.testing.assert_array_equal(c.blobs[0], w)
    np.testing.assert_array_equal(c.blobs[1], np.array([0.25, -1.0], np.float32))
    b = model.layers["bn"]
    assert b.blobs[0].shape == (1, 3, 1, 1)
    np.testing.assert_array_equal(b.blobs[0].ravel(), [1, 2, 3])
    assert b.blobs[1].dtype == np.float32 and b.blobs[1].tolist() == [999.5]
    assert model.blobs("conv1")[1].shape == (2,)
    with pytest.raises(FacemetricError, match="no layer 'nope'"):
        model.blobs("nope")


def test_v1_layers():
    layer = vint(5, 4) + text(4, "old") + text(2, "in") + text(3, "out") + ld(6, blob_shape([1]) + f32(5, 3.0))
    model = parse_caffemodel(ld(2, layer))
    old = model.layers["old"]
    assert (old.type, old.bottoms, old.tops) == ("V1:4", ["in"], ["out"])
    assert old.blobs[0].tolist() == [3.0]


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x0a\x05ab", "claims 5 bytes"),               # length past the end
        (b"\x08\x80\x80", "truncated varint"),            # varint without its last byte
        (b"\x0b", "unsupported wire type 3"),             # a group
        (b"\x00\x01", "field number 0"),
        (ld(100, ld(7, blob_shape([2, 2]) + packed_floats(5, [1, 2, 3]))), "holds 4 values, data has 3"),
        (b"", "no layers"),
    ],
)
def test_bad_bytes_are_one_line_errors(data, words):
    with pytest.raises(FacemetricError) as exc:
        parse_caffemodel(data, "x.caffemodel")
    assert str(exc.value).startswith("x.caffemodel: not a Caffe model")
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_read_caffemodel_file(tmp_path):
    path = tmp_path / "m.caffemodel"
    path.write_bytes(ld(100, text(1, "a") + ld(7, blob_shape([1]) + f32(5, 2.0))))
    assert read_caffemodel(path).layers["a"].blobs[0].tolist() == [2.0]
    with pytest.raises(FacemetricError, match="cannot read"):
        read_caffemodel(tmp_path / "missing.caffemodel")


PROTOTXT = r"""
# a comment
name: "net"   # trailing comment
input: "data"
input_shape { dim: 1 dim: 3 dim: 300 dim: 300 }
layer {
  name: "conv"
  type: "Convolution"
  bottom: "data"
  convolution_param { num_output: 32 bias_term: false pad: 3 kernel_size: 7
                      weight_filler { type: "msra" variance_norm: FAN_OUT } }
}
layer {
  name: 'say \"hi\"\n'
  type: "PriorBox"
  prior_box_param: { min_size: 30.0 aspect_ratio: 2 aspect_ratio: 3 step: 8 offset: 5e-1 clip: false }
  list: [1, 2.5, "x"];
}
"""


def test_prototxt_text_format():
    msg = parse_prototxt(PROTOTXT)
    assert msg.get("name") == "net" and msg.all("input") == ["data"]
    assert msg.get("input_shape").all("dim") == [1, 3, 300, 300]
    conv, prior = msg.all("layer")
    p = conv.get("convolution_param")
    assert (p.get("num_output"), p.get("bias_term"), p.get("pad"), p.get("kernel_size")) == (32, False, 3, 7)
    assert p.get("stride", 1) == 1 and "stride" not in p
    assert p.get("weight_filler").get("variance_norm") == "FAN_OUT"  # an enum identifier
    assert prior.get("name") == 'say "hi"\n'
    pb = prior.get("prior_box_param")
    assert pb.all("aspect_ratio") == [2, 3] and pb.get("min_size") == 30.0
    assert pb.get("offset") == 0.5 and pb.get("clip") is False
    assert isinstance(pb.get("min_size"), float) and isinstance(pb.get("step"), int)
    assert prior.all("list") == [1, 2.5, "x"]


@pytest.mark.parametrize(
    "text_in, words",
    [
        ("layer {\n name: \"a\"\n", "line 2: unterminated message"),
        ("a: 1\n}\n", "line 2: unmatched '}'"),
        ("a 1", "line 1: expected ':' or '{' after 'a'"),
        ("a: 1\nb: \"x\n", "line 2: unexpected"),
        ("a:", "has no value"),
    ],
)
def test_bad_prototxt_is_a_one_line_error(text_in, words):
    with pytest.raises(FacemetricError) as exc:
        parse_prototxt(text_in, "deploy.prototxt")
    assert str(exc.value).startswith("deploy.prototxt: ") and words in str(exc.value)
    assert "\n" not in str(exc.value)


def test_read_prototxt_file(tmp_path):
    path = tmp_path / "d.prototxt"
    path.write_text('layer { name: "x" }\n')
    assert read_prototxt(path).get("layer").get("name") == "x"
    with pytest.raises(FacemetricError, match="cannot read"):
        read_prototxt(tmp_path / "none.prototxt")
