"""The gallery's records and name rules: identities, images, a committed snapshot of the
vectors, the reserved :data:`UNKNOWN` name, and the checks of names, sources and metadata
(one-line :class:`~facemetric.errors.FacemetricError` each)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from facemetric.errors import FacemetricError

UNKNOWN = "unknown"


def json_dump(value: Any, name: str) -> str:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise FacemetricError(f"{name}: expected a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise FacemetricError(f"{name}: not JSON-serialisable ({exc})") from None


def check_name(identity: Any) -> None:
    if not isinstance(identity, str) or not identity.strip():
        raise FacemetricError(f"identity: expected a non-empty name, got {identity!r}")
    if identity == UNKNOWN:
        raise FacemetricError(f"identity: {UNKNOWN!r} is reserved for open-set rejections")
    try:
        identity.encode("utf-8")
    except UnicodeEncodeError:
        raise FacemetricError(f"identity: {identity!r} is not valid UTF-8") from None


def check_utf8(value: str | None, name: str) -> None:
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FacemetricError(f"{name}: {value!r} is not valid UTF-8") from None


class IdentityRecord(NamedTuple):
    name: str
    num_images: int
    metadata: dict
    created: str


class ImageRecord(NamedTuple):
    id: int
    identity: str
    source: str | None
    metadata: dict
    created: str


@dataclass
class Snapshot:
    """One committed state: the vectors and which identity each row belongs to."""

    revision: int
    generation: int
    files: list[str]
    vectors: np.ndarray  # [num_rows, D] float32
    row_identity: np.ndarray  # [num_rows] dense identity id, -1 = dead row
    names: list[str]  # dense identity id -> name
    counts: np.ndarray  # images per dense identity

    @property
    def live(self) -> np.ndarray:
        return self.row_identity >= 0


__all__ = ["UNKNOWN", "IdentityRecord", "ImageRecord", "Snapshot", "check_name", "check_utf8", "json_dump"]
