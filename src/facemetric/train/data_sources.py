"""Training data sources by name (``data.name`` in a config): the wiring of datasets, image
caches and validation pairs for ``facemetric train`` (formerly ``facemetric.data.sources``).

A source returns a :class:`DataBundle`: the training set, a held-out validation set with
verification pairs as indices into it (or ``None``), and the preprocessing that inference must
repeat. The validation *evaluator* is built from the bundle by the experiment
(:func:`facemetric.train.experiment.build_evaluator`) with the recipe's ``eval`` section, the
same way for every source.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.data.cache import CachedImageDataset, build_image_cache
from facemetric.data.digits import load_digits_split
from facemetric.data.folder import IdentityFolder
from facemetric.data.pairs import PairList, generate_pairs
from facemetric.data.protocols import PairSet, generate_folder_pairs, read_lfw_pairs
from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.data.transforms import PRESETS, Preprocessing
from facemetric.errors import DataError
from facemetric.inference.alignment import CardAligner
from facemetric.registry import Registry


@dataclass
class DataBundle:
    train: Any
    #: the held-out images (network inputs) and the verification pairs over them
    val: Any | None = None
    val_pairs: PairList | None = None
    #: flip test-time augmentation for validation (``data.val_flip``)
    val_flip: bool = False
    #: the identity of each ``val`` item (photo folders), for the model's impostor tail
    val_identities: list[str] | None = None
    #: the image file of each ``val`` item (photo folders), in order
    val_paths: list[str] | None = None
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


def _path(value: str | None) -> str | None:
    return os.path.expanduser(os.path.expandvars(value)) if value else value


def validation_set(
    pairs: PairSet, prep: Preprocessing, cache_dir: str | None = None, aligner: Any = None,
    num_workers: int = 2, progress: bool = True,
) -> tuple[CachedImageDataset, PairList, list[str], list[str]]:
    """The distinct images of ``pairs`` decoded (and cached) once, as a dataset of network
    inputs (centre crop, no augmentation); the pairs as indices into it; each image's identity
    (its parent folder name); and the image paths, in dataset order."""
    unique, index1, index2 = pairs.unique_paths()
    cache_path = _cache_file(cache_dir, unique, prep, "pairs", aligner)
    array = build_image_cache(
        unique, prep, cache_path, num_workers=num_workers, progress=progress, aligner=aligner
    )
    dataset = CachedImageDataset(array, np.zeros(len(unique), dtype=np.int64), prep, train=False)
    pair_list = PairList(first=index1, second=index2, issame=np.asarray(pairs.issame, dtype=bool),
                         fold=np.asarray(pairs.fold, dtype=np.int64))
    return dataset, pair_list, [Path(p).parent.name for p in unique], unique


def _cache_file(cache_dir: str | None, paths: list[str], prep: Any, tag: str, aligner: Any = None) -> str:
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
    default ``root``), or ``val_people`` (identities whose generated pairs are used,
    ``val_folds`` folds of ``val_pairs_per_fold`` pairs); ``val_flip``: flip test-time
    augmentation. The pairs are scored as the recipe's ``eval`` section says (``distance``,
    ``far_target``, ``batch_size``), like every other source's.
    """
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
    val = val_pair_list = val_identities = val_paths = None
    if pairs is not None:
        val, val_pair_list, val_identities, val_paths = validation_set(
            pairs, prep, cache_dir, aligner=aligner, num_workers=num_workers, progress=progress,
        )
        val_summary["val_pairs"] = len(pairs)
    return DataBundle(
        train=train,
        val=val,
        val_pairs=val_pair_list,
        val_flip=bool(val_flip),
        val_identities=val_identities,
        val_paths=val_paths,
        preprocessing=prep.to_dict(),
        supports_artifact=True,
        alignment=aligner.spec if aligner is not None else None,
        summary={"dataset": str(root), "people": people if isinstance(people, str) else None,
                 "min_images": min_images, **folder.summary(), **val_summary},
    )


__all__ = ["DATA_SOURCES", "DataBundle", "TensorImageDataset", "digits_source", "folder_source", "validation_set"]
