"""ONNX models as embedders: ``facemetric.load_model("model.onnx")`` runs onnxruntime.

A file written by :func:`facemetric.inference.onnx_export.export_onnx` carries its model card
(the same JSON as an artifact's ``model_card.json``) in the ONNX ``metadata_props`` under
:data:`CARD_KEY`. :func:`load_onnx_backbone` reads that card through onnxruntime (the ``onnx``
package is not needed to run a model) and wraps the inference session in
:class:`OnnxBackbone`, a parameter-free ``nn.Module`` whose ``forward(x [B, C, H, W]) ->
[B, D]`` runs the session. :func:`facemetric.inference.embedder.load_model` puts it into an
ordinary :class:`~facemetric.inference.FaceEmbedder` with that card, so decoding, alignment,
cropping, colour order, normalisation, flip-TTA and L2 normalisation are the ones of the
PyTorch model (the one embedding path, :mod:`facemetric.inference.embedding`); only the
network runs elsewhere.

onnxruntime is an optional extra: without it loading fails with one line naming
``pip install 'facemetric[onnx]'``. ``device="cuda"`` uses onnxruntime's CUDA execution
provider when that build has it (else the CPU one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from facemetric.errors import FacemetricError

#: the metadata_props key holding the model card (JSON)
CARD_KEY = "facemetric.model_card"
INSTALL_HINT = "pip install 'facemetric[onnx]'"


def is_onnx_path(path: Any) -> bool:
    """Whether ``path`` names an ONNX file (by its ``.onnx`` suffix)."""
    return isinstance(path, (str, os.PathLike)) and Path(path).suffix.lower() == ".onnx"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise FacemetricError(f"ONNX models need onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def _providers(ort: Any, device: torch.device) -> list[str]:
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackbone(nn.Module):
    """An onnxruntime session as a backbone: ``forward(x [B, C, H, W]) -> [B, D]`` float32,
    on ``x``'s device (computed by onnxruntime; no gradients)."""

    def __init__(self, session: Any, path: str) -> None:
        super().__init__()
        self.session = session
        self.path = path
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.detach().cpu().float().numpy())}
        out = self.session.run([self.output_name], feed)[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    def extra_repr(self) -> str:
        return f"path={self.path!r}, providers={self.session.get_providers()}"


def _check_card(card: Any, where: str) -> dict[str, Any]:
    if not isinstance(card, dict):
        raise FacemetricError(f"{where}: the model card is not a JSON object")
    for key in ("backbone", "embedding_dim", "preprocessing"):
        if key not in card:
            raise FacemetricError(f"{where}: the model card has no {key!r}")
    return card


def load_onnx_backbone(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[OnnxBackbone, dict[str, Any]]:
    """``(backbone, card)`` of the ONNX file ``path`` (see the module docstring)."""
    ort = _onnxruntime()
    p = Path(path)
    if not p.is_file():
        raise FacemetricError(f"{path}: ONNX model not found" if not p.exists() else f"{path}: not a file")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr
    try:
        session = ort.InferenceSession(str(p), sess_options=options, providers=_providers(ort, torch.device(device)))
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, ...)
        reason = " ".join(str(exc).split())[:160]
        raise FacemetricError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {reason})") from None
    text = session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
    if text is None:
        raise FacemetricError(
            f"{path}: no facemetric model card in the ONNX metadata (export it with `facemetric export`)"
        )
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FacemetricError(f"{path}: the model card in the ONNX metadata is not valid JSON ({exc.msg})") from None
    return OnnxBackbone(session, str(p)), _check_card(card, str(path))


__all__ = ["CARD_KEY", "OnnxBackbone", "is_onnx_path", "load_onnx_backbone"]
