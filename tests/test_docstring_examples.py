"""Every ``>>>`` example in the package's docstrings runs (doctest), so examples cannot rot.

The examples run from the repository root (they may name ``configs/*.yaml``); expected
output, where an example shows one, must match (``...`` matches anything). Examples that need
something a test machine may lack are listed in :data:`SKIPPED` with the reason.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
_PROMPT = re.compile(r"^\s*>>> ", re.MULTILINE)

#: module -> why its examples are not run here
SKIPPED: dict[str, str] = {
    "facemetric.align": "needs dlib and photos a.jpg/b.jpg (the dlib alignment is tested in tests/align)",
}


def _modules_with_examples() -> list[str]:
    found = []
    for path in sorted((SRC / "facemetric").rglob("*.py")):
        if _PROMPT.search(path.read_text(encoding="utf-8")):
            rel = path.relative_to(SRC).with_suffix("")
            parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            found.append(".".join(parts))
    return found


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    # the ones known when this test was written; a new example is picked up automatically
    for name in ("facemetric.train.experiment", "facemetric.registry"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    monkeypatch.chdir(REPO)
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    assert tests, f"{name}: the file has '>>>' lines but doctest finds no example in its docstrings"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} example(s) failed (see output)"
