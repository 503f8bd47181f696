"""ONNX export: ``export_onnx(model_or_artifact, "model.onnx")``.

The backbone is exported with PyTorch's own exporter (``torch.onnx.export(..., dynamo=True)``:
``torch.export`` then onnxscript; the legacy TorchScript exporter with ``dynamo=False``) with
one input ``input [batch, C, H, W]`` and one output ``embedding [batch, D]``, the batch axis
dynamic. The graph holds only the network: the preprocessing stays in the model card, which is
stored in the file's ``metadata_props`` under ``"facemetric.model_card"``
(:data:`facemetric.inference.onnx_model.CARD_KEY`) as the same JSON an artifact's
``model_card.json`` holds, plus an ``"onnx"`` entry (opset, input/output names, the exporter,
the parity check). The card's weights identity is kept, so the ONNX model has the PyTorch
model's fingerprint (:func:`facemetric.inference.model_card.model_fingerprint`): a gallery
enrolled with one accepts queries embedded by the other.

With ``check=True`` (default) onnxruntime runs the written graph on a random batch of a size
other than the export's (the dynamic axis) and the largest absolute difference from PyTorch
must stay within ``atol * max(1, max |PyTorch output|)`` (raw embeddings of an untrained
network may be large); the export is refused otherwise. The file is written atomically
(:func:`facemetric.io.atomic_write_bytes`): an existing file is replaced only by a complete
one, and no temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facemetric.data.transforms import Preprocessing
from facemetric.errors import FacemetricError
from facemetric.inference.embedder import FaceEmbedder, load_model
from facemetric.inference.onnx_model import CARD_KEY, INSTALL_HINT, OnnxBackbone, is_onnx_path
from facemetric.io import atomic_write_bytes

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


def _model_and_card(model_or_artifact: Any, card: dict[str, Any] | None) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(model_or_artifact, FaceEmbedder):
        model, card = model_or_artifact.model, dict(card or model_or_artifact.card)
    elif isinstance(model_or_artifact, nn.Module):
        if card is None:
            raise FacemetricError("card: exporting a bare module needs its model card (card=...)")
        model, card = model_or_artifact, dict(card)
    elif isinstance(model_or_artifact, (str, os.PathLike)):
        if is_onnx_path(model_or_artifact):
            raise FacemetricError(f"{model_or_artifact}: already an ONNX model; give the PyTorch artifact")
        embedder = load_model(model_or_artifact, align=False)
        model, card = embedder.model, dict(card or embedder.card)
    else:
        raise FacemetricError(
            f"model: expected a model artifact, run directory, pretrained name, FaceEmbedder or "
            f"nn.Module, got {type(model_or_artifact).__name__}"
        )
    if isinstance(model, OnnxBackbone):
        raise FacemetricError("model: already an ONNX model; give the PyTorch artifact")
    for key in ("backbone", "embedding_dim", "preprocessing"):
        if key not in card:
            raise FacemetricError(f"model card: missing required field {key!r}")
    return model, card


def _example(card: dict[str, Any], batch: int, seed: int) -> torch.Tensor:
    prep = Preprocessing.from_dict(card["preprocessing"])
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, prep.channels, *prep.input_size, generator=g)


def _export_proto(model: nn.Module, example: torch.Tensor, opset: int | None, dynamo: bool) -> Any:
    """The ``onnx.ModelProto`` of ``model`` with a dynamic batch axis."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; a clear line when it is missing)
        if dynamo:
            import onnxscript  # noqa: F401
    except ImportError:
        raise FacemetricError(f"ONNX export needs onnx and onnxscript: {INSTALL_HINT}") from None
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kwargs["opset_version"] = int(opset)
    quiet = io.StringIO()  # the exporter prints its progress on stdout: keep stdout for results
    torch_onnx_log = logging.getLogger("torch.onnx")  # and logs missing optional ops (torchvision)
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)
    try:
        return _export_quietly(model, example, dynamo, kwargs, quiet)
    finally:
        torch_onnx_log.setLevel(level)


def _export_quietly(model: nn.Module, example: torch.Tensor, dynamo: bool, kwargs: dict[str, Any],
                    quiet: io.StringIO) -> Any:
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                model, (example,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False, **kwargs
            )
            return program.model_proto
        import onnx

        buffer = io.BytesIO()
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        torch.onnx.export(model, (example,), buffer, dynamo=False, dynamic_axes=axes, **kwargs)
        return onnx.load_from_string(buffer.getvalue())


def _differences(data: bytes, model: nn.Module, example: torch.Tensor) -> tuple[float, float]:
    """``(max |onnxruntime - PyTorch|, max |PyTorch|)`` on ``example``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise FacemetricError(f"the parity check needs onnxruntime: {INSTALL_HINT} (or check=False)") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})[0].astype(np.float64)
    with torch.no_grad():
        want = model(example).double().numpy()
    if got.shape != want.shape:
        raise FacemetricError(f"ONNX export: onnxruntime output {got.shape} differs from PyTorch's {want.shape}")
    return float(np.abs(got - want).max()), float(np.abs(want).max())


def export_onnx(
    model_or_artifact: Any,
    out: str | os.PathLike,
    *,
    card: dict[str, Any] | None = None,
    opset: int | None = None,
    dynamo: bool = True,
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Write ``model_or_artifact`` (an artifact or run directory, a pretrained name, a
    :class:`FaceEmbedder`, or an ``nn.Module`` with ``card=``) to the ONNX file ``out``.

    ``opset``: the ONNX opset (default: the exporter's). Returns a summary
    ``{"path", "bytes", "opset", "input": {"name", "shape"}, "output": {"name", "shape"},
    "embedding_dim", "exporter", "max_abs_diff"}`` (the batch axis is named ``"batch"``) (``max_abs_diff`` None without ``check``); see the module docstring.
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise FacemetricError(f"{out}: expected a file name ending in .onnx")
    if out.is_dir():
        raise FacemetricError(f"{out}: is a directory")
    model, card = _model_and_card(model_or_artifact, card)
    model = copy.deepcopy(model).cpu().eval().float()
    example = _example(card, 2, seed=0)
    proto = _export_proto(model, example, opset, dynamo)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if not isinstance(dims[0], str):
        raise FacemetricError(f"ONNX export: the batch axis of the input is fixed ({dims}), expected dynamic")
    opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    card["onnx"] = {
        "opset": opset_used, "input": INPUT_NAME, "output": OUTPUT_NAME,
        "exporter": "torch.onnx dynamo" if dynamo else "torch.onnx torchscript", "torch": torch.__version__,
    }
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(card)
    diff = None
    if check:
        diff, scale = _differences(proto.SerializeToString(), model, _example(card, 3, seed=1))
        if not diff <= atol * max(1.0, scale):
            raise FacemetricError(
                f"ONNX export: onnxruntime differs from PyTorch by {diff:.3g} on outputs up to "
                f"{scale:.3g} (tolerance {atol:g} x max(1, that)); nothing written"
            )
        card["onnx"]["max_abs_diff"] = diff
        card["onnx"]["max_abs_output"] = scale
        entry.value = json.dumps(card)
    data = proto.SerializeToString()
    atomic_write_bytes(out, data)
    return {
        "path": str(out), "bytes": len(data), "opset": opset_used,
        "input": {"name": INPUT_NAME, "shape": dims}, "output": {"name": OUTPUT_NAME, "shape": [dims[0], int(card["embedding_dim"])]},
        "embedding_dim": int(card["embedding_dim"]),
        "exporter": card["onnx"]["exporter"], "max_abs_diff": diff,
    }


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx"]
