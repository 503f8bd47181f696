"""Feature-space statistics: class compactness and feature norms.

* intra-class spread: mean distance of a feature to its class mean, ``mean_i ||x_i - mu_{y_i}||``;
* inter-class separation: mean distance between distinct class means, ``mean_{j<k} ||mu_j - mu_k||``;
* ``intra_inter_ratio`` = intra / inter (smaller = tighter, better separated classes).

Computed both on the raw features and on L2-normalised ones (``*_normalized``), since losses
differ in which space they shape; verification uses the normalised one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor


def _ratio(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    index = {c: i for i, c in enumerate(classes)}
    centred = x - means[[index[c] for c in labels]]
    intra = float(np.linalg.norm(centred, axis=1).mean())
    diffs = means[:, None, :] - means[None, :, :]
    dist = np.linalg.norm(diffs, axis=2)
    iu = np.triu_indices(len(classes), k=1)
    inter = float(dist[iu].mean()) if len(classes) > 1 else float("nan")
    return {"intra": intra, "inter": inter, "intra_inter_ratio": intra / inter if inter > 0 else float("inf")}


def feature_statistics(embeddings: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> dict[str, Any]:
    """Compactness (raw and normalised) and norm statistics of labelled features."""
    x = embeddings.detach().double().cpu().numpy() if isinstance(embeddings, Tensor) else np.asarray(embeddings, dtype=np.float64)
    y = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    norms = np.linalg.norm(x, axis=1)
    xn = x / np.maximum(norms[:, None], 1e-12)
    raw = _ratio(x, y)
    normalized = _ratio(xn, y)
    return {
        "intra_inter_ratio": raw["intra_inter_ratio"],
        "intra_inter_ratio_normalized": normalized["intra_inter_ratio"],
        "intra_class_distance": raw["intra"],
        "inter_class_distance": raw["inter"],
        "intra_class_distance_normalized": normalized["intra"],
        "inter_class_distance_normalized": normalized["inter"],
        "feature_norm": {
            "mean": float(norms.mean()),
            "std": float(norms.std()),
            "min": float(norms.min()),
            "median": float(np.median(norms)),
            "max": float(norms.max()),
        },
    }


__all__ = ["feature_statistics"]
