"""An in-memory labelled image dataset that serves whole batches by fancy indexing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from facemetric.errors import DataError


class TensorImageDataset(torch.utils.data.Dataset):
    """``images [N, C, H, W]`` float tensor and ``labels [N]`` int64 tensor, held in memory.

    ``dataset[i] -> (image, label)``; :meth:`get_batch` returns a whole batch at once, which the
    trainer uses instead of a per-item DataLoader when it is available.
    """

    def __init__(self, images: Tensor, labels: Tensor, class_names: Sequence[str] | None = None):
        if images.ndim != 4:
            raise DataError(f"images: expected a [N, C, H, W] tensor, got shape {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"labels: expected shape [{images.shape[0]}], got {tuple(labels.shape)}"
            )
        if images.shape[0] == 0:
            raise DataError("dataset: no images")
        self.images = images
        self.labels = labels.long()
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def get_batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def subset(self, indices: Sequence[int] | Tensor) -> TensorImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TensorImageDataset(self.images[idx], self.labels[idx], self.class_names)
