"""A trained dense model with its card: ``parse`` photos into label maps, edges, skeletons.

The card (``model_card.json`` of a dense artifact, ``"kind": "dense"``) carries the network
options and the preprocessing: ``input_size [H, W]`` (photos are resized to it with bilinear
interpolation), per-channel ``mean``/``std`` on 0..1 RGB, and ``class_names``. Outputs are
brought back to each photo's own size (bilinear on logits/probabilities, then argmax), so a
label map always has its photo's size.

>>> import numpy as np
>>> from facemetric.dense.model import DenseNet
>>> from facemetric.dense.predict import DenseModel, dense_card
>>> net = DenseNet(heads=["fcn"], channels=[4, 4, 4], fcn_width=4)
>>> model = DenseModel(net, dense_card(net, input_size=(32, 32)))
>>> model.parse(np.zeros((40, 30, 3), np.uint8))[0].shape
(40, 30)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facemetric.data.image_io import convert_image, read_image
from facemetric.dense.model import DenseNet
from facemetric.errors import FacemetricError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CARD_KIND = "dense"


def dense_card(net: DenseNet, input_size: Sequence[int] = (128, 128),
               class_names: Sequence[str] = ("background", "skin", "hair"),
               **extra: Any) -> dict[str, Any]:
    """The model-card fields of a dense model (``kind``, ``backbone``, ``preprocessing``:
    ImageNet's mean/std, or the trunk's own, e.g. dlib's, :meth:`DenseNet.preprocessing`)."""
    mean, std = net.preprocessing() or (IMAGENET_MEAN, IMAGENET_STD)
    return {
        "kind": CARD_KIND,
        "backbone": {"name": f"dense-{net.options().get('trunk', 'vgg')}", "options": net.options()},
        "embedding_dim": 0,
        "preprocessing": {
            "input_size": [int(input_size[0]), int(input_size[1])],
            "mean": list(mean), "std": list(std), "color": "RGB",
        },
        "class_names": list(class_names),
        "fsds_receptive_fields": net.fsds_receptive_fields(),
        **extra,
    }


def normalise(images: Tensor | np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]``: ``(x / 255 - mean) / std``."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return (x - m) / s


def _to_array(item: Any) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        return read_image(item, "RGB")
    if hasattr(item, "convert"):  # PIL
        return np.asarray(convert_image(item, "RGB"))
    arr = np.asarray(item)
    if arr.dtype != np.uint8:
        raise FacemetricError(f"images: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, 2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise FacemetricError(f"images: expected an [H, W, 3] array, got shape {arr.shape}")
    return np.repeat(arr, 3, 2) if arr.shape[2] == 1 else arr


class DenseModel:
    """A :class:`DenseNet` plus its card. ``predict`` gives every head's maps; ``parse`` the
    label maps."""

    def __init__(self, net: DenseNet, card: dict[str, Any], device: str | torch.device = "cpu"):
        self.card = card
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        pre = card.get("preprocessing") or {}
        self.input_size = tuple(int(v) for v in pre.get("input_size", (128, 128)))
        self.mean = tuple(pre.get("mean", IMAGENET_MEAN))
        self.std = tuple(pre.get("std", IMAGENET_STD))
        self.class_names = list(card.get("class_names") or ["background", "skin", "hair"])

    @property
    def heads(self) -> list[str]:
        return list(self.net.heads)

    def _forward(self, x: Tensor, flip: bool) -> dict[str, Any]:
        res = self.net(x)
        if not flip:
            return res
        mirrored = self.net(x.flip(-1))
        out: dict[str, Any] = {}
        for key, value in res.items():
            if isinstance(value, list):
                out[key] = [(a + b.flip(-1)) / 2 for a, b in zip(value, mirrored[key], strict=True)]
            else:
                out[key] = (value + mirrored[key].flip(-1)) / 2
        return out

    @torch.no_grad()
    def predict_arrays(self, arrays: Sequence[np.ndarray], batch_size: int = 16,
                       flip: bool = False) -> list[dict[str, Any]]:
        """Per photo: ``labels`` uint8 ``[H, W]`` and ``probs`` float32 ``[C, H, W]`` (``fcn``),
        ``edges`` and ``edge_sides`` (``hed``), ``skeleton``/``skeleton_scale`` and
        ``skeleton_sides`` (``fsds``), ``skeleton_hed`` (``skel_hed``); maps in 0..1 at the
        photo's size. ``flip``: test-time augmentation, the logits of the photo and of its mirror
        image (mirrored back) averaged."""
        out: list[dict[str, Any]] = []
        h0, w0 = self.input_size
        for start in range(0, len(arrays), batch_size):
            chunk = [np.asarray(a) for a in arrays[start : start + batch_size]]
            x = torch.cat([
                F.interpolate(normalise(a[None], self.mean, self.std), size=(h0, w0), mode="bilinear",
                              align_corners=False, antialias=True)
                if a.shape[:2] != (h0, w0) else normalise(a[None], self.mean, self.std)
                for a in chunk
            ]).to(self.device)
            res = self._forward(x, flip)
            for j, a in enumerate(chunk):
                size = a.shape[:2]

                def back(t: Tensor, size=size, j=j) -> Tensor:
                    t = t[j : j + 1].float()
                    if tuple(t.shape[-2:]) != tuple(size):
                        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                    return t[0].cpu()

                item: dict[str, Any] = {}
                if "parse" in res:
                    logits = back(res["parse"])
                    item["probs"] = torch.softmax(logits, 0).numpy()
                    item["labels"] = logits.argmax(0).numpy().astype(np.uint8)
                if "edge_fuse" in res:
                    item["edges"] = torch.sigmoid(back(res["edge_fuse"]))[0].numpy()
                    item["edge_sides"] = [torch.sigmoid(back(s))[0].numpy() for s in res["edge_sides"]]
                if "skel_fuse" in res:
                    p = torch.softmax(back(res["skel_fuse"]), 0)
                    item["skeleton"] = (1 - p[0]).numpy()
                    item["skeleton_scale_class"] = p.argmax(0).numpy().astype(np.uint8)
                    item["skeleton_sides"] = [
                        (1 - torch.softmax(back(s), 0)[0]).numpy() for s in res["skel_sides"]
                    ]
                if "skel_hed_fuse" in res:
                    item["skeleton_hed"] = torch.sigmoid(back(res["skel_hed_fuse"]))[0].numpy()
                out.append(item)
        return out

    def predict(self, images: Any, batch_size: int = 16, flip: bool = False) -> list[dict[str, Any]]:
        """:meth:`predict_arrays` for paths, PIL images or uint8 arrays (one or a list)."""
        items = [images] if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "convert") else list(images)
        if not items:
            raise FacemetricError("images: nothing to parse")
        return self.predict_arrays([_to_array(i) for i in items], batch_size, flip)

    def parse(self, images: Any, batch_size: int = 16, flip: bool = False) -> list[np.ndarray]:
        """Label maps (uint8 ``[H, W]``, values index :attr:`class_names`) of ``images``."""
        if "fcn" not in self.net.heads:
            raise FacemetricError(f"model: has no parsing head (heads: {', '.join(self.net.heads)})")
        return [r["labels"] for r in self.predict(images, batch_size, flip)]


def dense_model_from_state(card: dict[str, Any], state: dict[str, Tensor],
                           device: str | torch.device = "cpu", where: str = "model") -> DenseModel:
    """Rebuild a :class:`DenseModel` from a card and its weights (one-line errors). A
    pretrained trunk is built empty: the artifact's weights replace it."""
    opts = dict((card.get("backbone") or {}).get("options") or {})
    if opts.get("pretrained"):
        opts["pretrained"] = False
    try:
        net = DenseNet(**opts)
    except TypeError as exc:
        raise FacemetricError(f"{where}: dense model options do not fit ({exc})") from None
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FacemetricError(
            f"{where}: weights do not match the dense model (missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    return DenseModel(net, card, device)


__all__ = ["CARD_KIND", "DenseModel", "dense_card", "dense_model_from_state", "normalise"]
