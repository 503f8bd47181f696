"""Writing an identification report to disk: the JSON (stable keys, written atomically) and
a CMC figure beside it. The report itself comes from
:func:`facemetric.eval.identification.identification_report`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from facemetric.io import atomic_write_text
from facemetric.report.plots import cmc_plot


def save_identification_report(
    report: dict[str, Any], out: str | os.PathLike, *, embeddings: str | os.PathLike | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Write ``{"embeddings", "model", **report}`` to ``out`` (JSON, atomic) and the CMC curve to
    ``<out stem>-cmc.png``; return the written dict. ``embeddings`` names the embeddings file the
    report came from (``None`` when it was embedded from a model directly)."""
    out = Path(out)
    written = {"embeddings": None if embeddings is None else os.fspath(embeddings), "model": model, **report}
    enrolled = report.get("protocol", {}).get("enrolled_identities", 0)
    cmc_plot({str(model or "model"): report["cmc"]}, out.with_name(out.stem + "-cmc.png"),
             title=f"CMC, {enrolled:.0f} identities")
    atomic_write_text(out, json.dumps(written, indent=2) + "\n")
    return written


__all__ = ["save_identification_report"]
