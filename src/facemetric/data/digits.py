"""The embedded default data set: the 1,797 8x8 handwritten digits shipped inside scikit-learn.

No download: scikit-learn carries the file. Images (16 grey levels) are scaled to [0, 1],
resized (bilinear) to ``input_size`` and standardised with the training split's mean/std.
The split is stratified by digit and seeded, so a held-out set contains every digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.errors import DataError


@dataclass
class DigitsSplit:
    train: TensorImageDataset
    test: TensorImageDataset
    mean: float
    std: float
    input_size: int


def load_digits_split(input_size: int = 16, test_fraction: float = 0.3, seed: int = 0) -> DigitsSplit:
    """Stratified train/test split of scikit-learn's digits as ``[N, 1, S, S]`` float tensors."""
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"data.test_fraction: expected a fraction in (0, 1), got {test_fraction}")
    if int(input_size) < 8:
        raise DataError(f"data.input_size: expected at least 8, got {input_size}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # [N,1,8,8]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    if input_size != 8:
        images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for digit in range(10):
        members = np.flatnonzero(bunch.target == digit)
        rng.shuffle(members)
        test_idx.extend(members[: int(round(len(members) * test_fraction))].tolist())
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_idx] = True
    train_images, test_images = images[~test_mask], images[test_mask]
    mean, std = float(train_images.mean()), float(train_images.std())
    names = [str(d) for d in range(10)]
    return DigitsSplit(
        train=TensorImageDataset((train_images - mean) / std, labels[~test_mask], names),
        test=TensorImageDataset((test_images - mean) / std, labels[test_mask], names),
        mean=mean,
        std=std,
        input_size=int(input_size),
    )
