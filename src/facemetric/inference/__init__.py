"""Inference: model artifacts (weights + model card) and the embedder that applies them."""

from facemetric.inference.artifact import CARD_NAME, WEIGHTS_NAME, load_card, save_artifact
from facemetric.inference.embedder import FaceEmbedder, load_model

__all__ = ["save_artifact", "load_card", "load_model", "FaceEmbedder", "CARD_NAME", "WEIGHTS_NAME"]
