"""Evaluation: the face-verification protocol of LFW (k-fold accuracy, VAL@FAR, ROC/AUC/EER)
and feature norm as face quality (:func:`quality_analysis`)."""

from facemetric.eval.quality import quality_analysis
from facemetric.eval.verification import (
    evaluate_verification,
    kfold_accuracy,
    pair_scores,
    roc_metrics,
    val_at_far,
)

__all__ = [
    "evaluate_verification",
    "kfold_accuracy",
    "pair_scores",
    "quality_analysis",
    "roc_metrics",
    "val_at_far",
]
