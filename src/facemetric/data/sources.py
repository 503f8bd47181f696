"""Training data sources by name (``data.name`` in a config).

A source returns a :class:`DataBundle`: the training set, a held-out set with verification
pairs (or ``None``), and the preprocessing that inference must repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from facemetric.data.pairs import PairList, generate_pairs
from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.registry import Registry


@dataclass
class DataBundle:
    train: Any
    val: Any | None = None
    val_pairs: PairList | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


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
