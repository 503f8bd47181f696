"""Training data sources by name (``data.name`` in a config).

A source returns a :class:`DataBundle`: the training set, a held-out set with verification
pairs (or ``None``), and the preprocessing that inference must repeat.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facemetric.data.pairs import PairList, generate_pairs
from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.errors import DataError
from facemetric.registry import Registry


@dataclass
class DataBundle:
    train: Any
    val: Any | None = None
    val_pairs: PairList | None = None
    #: a ready evaluator ``evaluator(model) -> metrics`` (used instead of val/val_pairs)
    evaluator: Any = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: whether ``preprocessing`` is a full :class:`Preprocessing` dict, so a model artifact
    #: (weights + card) can be written for models trained on this data
    supports_artifact: bool = False
    #: the detection + alignment step the images went through (goes into the model card)
    alignment: dict[str, Any] | None = None


DATA_SOURCES: Registry[DataBundle] = Registry("data source")


@DATA_SOURCES.register("digits")
def digits_source(
    input_size: int = 16,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    pairs_per_fold: int = 60,
    pair_folds: int = 10,
    pair_seed: int = 0,
) -> DataBundle:
    """scikit-learn's 8x8 digits (embedded): stratified split, generated held-out pairs."""
    from facemetric.data.digits import load_digits_split

    split = load_digits_split(input_size=input_size, test_fraction=test_fraction, seed=split_seed)
    pairs = generate_pairs(
        split.test.labels.numpy(), pairs_per_fold=pairs_per_fold, n_folds=pair_folds, seed=pair_seed
    )
    return DataBundle(
        train=split.train,
        val=split.test,
        val_pairs=pairs,
        preprocessing={
            "input_size": [input_size, input_size],
            "channels": 1,
            "resize": "bilinear from 8x8",
            "normalize": {"mean": split.mean, "std": split.std, "scale": "pixel/16"},
        },
        summary={
            "dataset": "sklearn digits",
            "train_images": len(split.train),
            "train_classes": split.train.num_classes,
            "val_images": len(split.test),
            "val_pairs": len(pairs),
        },
    )


__all__ = ["DATA_SOURCES", "DataBundle", "TensorImageDataset"]


def _path(value: str | None) -> str | None:
    return os.path.expanduser(os.path.expandvars(value)) if value else value


class PairSetEvaluator:
    """``evaluator(model) -> metrics`` for a pair set of image files (e.g. LFW ``pairs.txt``).

    The distinct images of the pairs are decoded once (cached), embedded with optional flip
    test-time augmentation, and scored with the LFW protocol.
    """

    def __init__(self, pairs: Any, dataset: Any, index1: Any, index2: Any, flip: bool = False,
                 distance: str = "squared_l2", far_target: float = 1e-3, batch_size: int = 128):
        self.pairs, self.dataset = pairs, dataset
        self.index1, self.index2 = index1, index2
        self.flip, self.distance, self.far_target, self.batch_size = flip, distance, far_target, batch_size

    def embeddings(self, model: Any) -> Any:
        import torch
        import torch.nn.functional as F

        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(self.dataset), self.batch_size):
                    idx = list(range(start, min(start + self.batch_size, len(self.dataset))))
                    x, _ = self.dataset.get_batch(idx)
                    x = x.to(device)
                    e = model(x).float()
                    if self.flip:
                        e = e + model(torch.flip(x, dims=[3])).float()
                    out.append(e.cpu())
        finally:
            model.train(was_training)
        return F.normalize(torch.cat(out).double(), dim=1).numpy()

    def identities(self) -> list[str]:
        """The identity (parent folder name) of each distinct image, in embedding order."""
        unique, _, _ = self.pairs.unique_paths()
        return [Path(p).parent.name for p in unique]

    def __call__(self, model: Any) -> dict[str, Any]:
        from facemetric.eval.verification import evaluate_verification

        emb = self.embeddings(model)
        metrics = evaluate_verification(
            emb[self.index1], emb[self.index2], issame=self.pairs.issame, folds=self.pairs.fold,
            distance=self.distance, far_target=self.far_target,
        )
        metrics.pop("roc", None)
        return metrics


def pair_set_evaluator(
    pairs: Any, prep: Any, cache_dir: str | None = None, flip: bool = False, aligner: Any = None,
    far_target: float = 1e-3, num_workers: int = 2, progress: bool = True,
) -> PairSetEvaluator:
    """Build a :class:`PairSetEvaluator`: decode (and cache) the pairs' distinct images once."""
    import numpy as np

    from facemetric.data.cache import CachedImageDataset, build_image_cache

    unique, index1, index2 = pairs.unique_paths()
    cache_path = _cache_file(cache_dir, unique, prep, "pairs", aligner)
    array = build_image_cache(
        unique, prep, cache_path, num_workers=num_workers, progress=progress, aligner=aligner
    )
    dataset = CachedImageDataset(array, np.zeros(len(unique), dtype=np.int64), prep, train=False)
    return PairSetEvaluator(pairs, dataset, index1, index2, flip=flip, far_target=far_target)


def _cache_file(cache_dir: str | None, paths: list[str], prep: Any, tag: str, aligner: Any = None) -> str:
    import hashlib
    import json

    key: list[Any] = [paths, prep.to_dict()]
    if aligner is not None:
        key.append(aligner.spec)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    base = Path(_path(cache_dir) or os.environ.get("FACEMETRIC_CACHE", "~/.cache/facemetric")).expanduser()
    base.mkdir(parents=True, exist_ok=True)
    return str(base / f"{tag}-{digest}.npy")


@DATA_SOURCES.register("folder", "identity-folder")
def folder_source(
    root: str,
    people: str | list[str] | None = None,
    min_images: int = 1,
    skip_corrupt: bool = False,
    preprocessing: str | dict[str, Any] | None = None,
    random_crop: bool = True,
    flip: bool = True,
    cache_dir: str | None = None,
    val_pairs: str | None = None,
    val_root: str | None = None,
    val_people: str | list[str] | None = None,
    val_pairs_per_fold: int = 600,
    val_folds: int = 10,
    val_flip: bool = False,
    num_workers: int = 2,
    progress: bool = True,
    seed: int = 0,
    alignment: dict[str, Any] | None = None,
) -> DataBundle:
    """Identity folders ``<root>/<identity>/<image>`` (LFW / facenet layout) for training.

    ``people`` (a list or an LFW people file) and ``min_images`` filter the identities; images
    are decoded once into a uint8 cache (``cache_dir``, default ``$FACEMETRIC_CACHE`` or
    ``~/.cache/facemetric``). ``preprocessing`` is a dict of :class:`Preprocessing` fields or
    a preset name. ``alignment`` (a model card's alignment section, e.g. dlib's HOG + 5-point
    150x150 chip) detects and aligns every image before ``preprocessing``; it is cached and
    recorded in the model card. Validation: ``val_pairs`` (an LFW-format pairs file over ``val_root``,
    default ``root``), or ``val_people`` (identities whose generated pairs are used).
    """
    from facemetric.data.cache import CachedImageDataset, build_image_cache
    from facemetric.data.folder import IdentityFolder
    from facemetric.data.protocols import generate_folder_pairs, read_lfw_pairs
    from facemetric.data.transforms import PRESETS, Preprocessing

    if isinstance(preprocessing, str):
        if preprocessing not in PRESETS:
            raise DataError(
                f"data.preprocessing: unknown preset {preprocessing!r}; expected one of {sorted(PRESETS)}"
            )
        prep = PRESETS[preprocessing]
    else:
        prep = Preprocessing.from_dict(preprocessing or {})
    people = _path(people) if isinstance(people, str) else people
    folder = IdentityFolder(_path(root), min_images=min_images, identities=people, skip_corrupt=skip_corrupt)
    aligner = None
    if alignment:
        from facemetric.inference.alignment import CardAligner

        aligner = CardAligner(dict(alignment))
    cache_path = _cache_file(cache_dir, [str(p) for p in folder.paths], prep, "train", aligner)
    array = build_image_cache(
        folder.paths, prep, cache_path, num_workers=num_workers, progress=progress,
        skip_corrupt=skip_corrupt, aligner=aligner,
    )
    train = CachedImageDataset(
        array, folder.labels, prep, train=True, random_crop=random_crop, flip=flip, seed=seed,
        class_names=folder.classes,
    )
    evaluator = None
    val_summary: dict[str, Any] = {}
    if val_pairs and val_people:
        raise DataError("data: give either val_pairs (a pairs file) or val_people, not both")
    if val_pairs:
        pairs = read_lfw_pairs(_path(val_pairs), _path(val_root) or _path(root))
        val_summary = {"val_pairs_file": val_pairs}
    elif val_people:
        val_people = _path(val_people) if isinstance(val_people, str) else val_people
        val_folder = IdentityFolder(_path(val_root) or _path(root), identities=val_people)
        pairs = generate_folder_pairs(val_folder, pairs_per_fold=val_pairs_per_fold, n_folds=val_folds, seed=seed)
        val_summary = {"val_identities": val_folder.num_classes}
    else:
        pairs = None
    if pairs is not None:
        evaluator = pair_set_evaluator(
            pairs, prep, cache_dir, flip=val_flip, aligner=aligner, num_workers=num_workers,
            progress=progress,
        )
        val_summary["val_pairs"] = len(pairs)
    return DataBundle(
        train=train,
        evaluator=evaluator,
        preprocessing=prep.to_dict(),
        supports_artifact=True,
        alignment=aligner.spec if aligner is not None else None,
        summary={"dataset": str(root), "people": people if isinstance(people, str) else None,
                 "min_images": min_images, **folder.summary(), **val_summary},
    )
