"""The package structure of DESIGN.md, checked on the source with ``ast`` (nothing is imported).

(a) The graph of imports between the packages of ``src/facemetric`` has no cycle, and no
    package imports one in a higher layer (same-layer imports are allowed; the no-cycle check
    covers them).
(b) No function-level import of a facemetric module exists, except the commented entries of
    :data:`ALLOWED_FUNCTION_IMPORTS` (no import may be deferred only to dodge a cycle).
``TYPE_CHECKING`` blocks are ignored (annotations only); ``importlib.import_module`` calls
count as function-level imports.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "facemetric"

#: layers, lowest first: a package may import its own layer (acyclically) or lower ones only.
#: The root package ``facemetric`` (``__init__``, the public facade) sits on top.
LAYERS: list[set[str]] = [
    {"errors", "registry", "io", "distances", "_version", "distributed"},  # generic bottom layer
    {"models", "losses", "align", "data", "report", "index", "detect", "dense"},  # building blocks
    {"inference"},  # model artifacts and the one embedding path
    {"eval"},  # metrics and evaluators (used by the applications below it in this list)
    {"gallery", "cluster", "train"},  # applications
    {"cli", "serve", "demo", "__init__", "__main__"},  # user interfaces and the facade (__main__: python -m facemetric)
]

#: (importing module, imported module) pairs allowed as function-level imports. Each entry
#: says why; none may exist to dodge a cycle.
ALLOWED_FUNCTION_IMPORTS: dict[tuple[str, str], str] = {
    # the lazy public facade: ``facemetric.load_model`` imports the inference stack on first use
    # (``import facemetric`` stays light); done through importlib in a module __getattr__
    ("facemetric", "<importlib>"): "lazy public facade (facemetric.__getattr__)",
    # CLI lazy command loading: each command imports its implementation when it runs, so that
    # ``facemetric --help`` and usage errors do not import torch and the whole stack
    ("facemetric.cli.embedding_commands", "facemetric.eval.embedding_set"): "CLI lazy command body",
    ("facemetric.cli.embedding_commands", "facemetric.eval.identification"): "CLI lazy command body",
    ("facemetric.cli.embedding_commands", "facemetric.eval.identification_output"): "CLI lazy command body",
    ("facemetric.cli.model_commands", "facemetric.demo"): "CLI lazy command body",
    ("facemetric.cli.model_commands", "facemetric.train.tasks"): "CLI lazy command body",
    ("facemetric.cli.model_commands", "facemetric.eval.evaluate_model"): "CLI lazy command body",
    ("facemetric.cli.model_commands", "facemetric.inference"): "CLI lazy command body",
    ("facemetric.cli.model_commands", "facemetric.models"): "CLI lazy command body",
    ("facemetric.cli.model_commands", "facemetric.losses"): "CLI lazy command body",
    ("facemetric.cli.options", "facemetric.data.image_io"): "CLI lazy: importing facemetric.data imports torch; --help must not",
    ("facemetric.cli.gallery_commands", "facemetric.gallery"): "CLI lazy command body",
    ("facemetric.cli.gallery_commands", "facemetric.gallery.enrolment"): "CLI lazy command body",
    ("facemetric.cli.gallery_commands", "facemetric.cluster.folder_job"): "CLI lazy command body",
    ("facemetric.cli.gallery_commands", "facemetric.inference"): "CLI lazy command body",
    ("facemetric.cli.gallery_commands", "facemetric.inference.model_card"): "CLI lazy command body",
    ("facemetric.cli.export_commands", "facemetric.inference.onnx_export"): "CLI lazy command body",
    ("facemetric.cli.serve_commands", "facemetric.serve"): "CLI lazy command body (serve imports fastapi, uvicorn and torch)",
    ("facemetric.cli.dense_commands", "facemetric.inference"): "CLI lazy command body",
    ("facemetric.cli.dense_commands", "facemetric.data.image_io"): "CLI lazy command body",
    ("facemetric.cli.dense_commands", "facemetric.report.dense_html"): "CLI lazy command body",
    ("facemetric.cli.dense_commands", "facemetric.eval.dense"): "CLI lazy command body",
    ("facemetric.cli.dense_commands", "facemetric.eval.skin_quality"): "CLI lazy command body",
    ("facemetric.cli.detect_commands", "facemetric.align"): "CLI lazy command body (the detectors import torch)",
    ("facemetric.cli.detect_commands", "facemetric.report.detection_html"): "CLI lazy command body",
    ("facemetric.cli.detect_commands", "facemetric.align.chips"): "CLI lazy command body (the detectors import torch)",
    ("facemetric.cli.detect_commands", "facemetric.align.fallback"): "CLI lazy command body",
    ("facemetric.cli.detect_commands", "facemetric.align.landmarks"): "CLI lazy command body",
    ("facemetric.cli.detect_commands", "facemetric.inference.pretrained"): "CLI lazy command body (the card's landmark boxes)",
}


def _module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, src: Path) -> list[str]:
    if node.level == 0:
        base = node.module or ""
        if base == "facemetric":  # ``from facemetric import x``: the facade, or a subpackage
            return [f"facemetric.{a.name}" if (src / a.name).exists() or (src / f"{a.name}.py").exists()
                    else "facemetric" for a in node.names]
        return [base]
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    return [base]


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def scan(src: Path = SRC) -> tuple[dict[str, set[tuple[str, str]]], list[tuple[str, str, int]]]:
    """``(edges, function_level)`` of the package at ``src``: package -> {(package,
    "importer -> imported")}, and the function-level imports ``(importer, imported, line)``."""
    edges: dict[str, set[tuple[str, str]]] = defaultdict(set)
    function_level: list[tuple[str, str, int]] = []
    for path in sorted(src.rglob("*.py")):
        module = _module_name(path, src)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

        def visit(node: ast.AST, in_function: bool, module: str = module, path: Path = path) -> None:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.orelse:
                    visit(child, in_function)
                return
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(module, path.name == "__init__.py", node, src)
            elif (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
            ):
                arg = node.args[0] if node.args else None
                name = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "<importlib>"
                if name == "<importlib>" or name.startswith("facemetric"):
                    function_level.append((module, name, node.lineno))
            for target in targets:
                if target != "facemetric" and not target.startswith("facemetric."):
                    continue
                if in_function:
                    function_level.append((module, target, node.lineno))
                a, b = _package(module), _package(target)
                if a != b:
                    edges[a].add((b, f"{module} -> {target}"))
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, inner)

        visit(tree, False)
    return edges, function_level


def _layer(package: str) -> int:
    for i, members in enumerate(LAYERS):
        if package in members:
            return i
    raise AssertionError(f"package {package!r} is in no layer of tests/test_layering.py")


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    for package in sorted(packages):
        _layer(package)


def test_imports_point_down_the_layers():
    edges, _ = scan()
    upward = [
        f"{why} (layer {_layer(a)} imports layer {_layer(b)})"
        for a, targets in edges.items()
        for b, why in targets
        if _layer(b) > _layer(a)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_no_cycle_between_packages():
    edges, _ = scan()
    graph = {a: {b for b, _ in targets} for a, targets in edges.items()}
    cycle = _find_cycle(graph)
    if cycle:
        why = [next(w for b, w in sorted(edges[x]) if b == y) for x, y in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("package cycle " + " -> ".join(cycle) + ":\n" + "\n".join(why))


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_function_level_imports_outside_the_allow_list():
    _, function_level = scan()
    found = {(importer, imported) for importer, imported, _ in function_level}
    bad = sorted(
        f"{importer}:{line} imports {imported} inside a function"
        for importer, imported, line in function_level
        if (importer, imported) not in ALLOWED_FUNCTION_IMPORTS
    )
    assert not bad, "function-level imports (make them top-level, or allow-list them with a reason):\n" + "\n".join(bad)
    stale = sorted(f"{a} -> {b}" for a, b in ALLOWED_FUNCTION_IMPORTS if (a, b) not in found)
    assert not stale, "allow-list entries that no longer occur (remove them):\n" + "\n".join(stale)


def test_the_scanner_sees_function_level_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "facemetric"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from facemetric.high import x\n"
        "def f():\n    from facemetric.high import y\n    return y\n"
    )
    (pkg / "high.py").write_text("from facemetric.low import f\n")
    edges, function_level = scan(pkg)
    assert function_level == [("facemetric.low", "facemetric.high", 5)]
    assert {b for b, _ in edges["low"]} == {"high"} and {b for b, _ in edges["high"]} == {"low"}
    assert _find_cycle({a: {b for b, _ in t} for a, t in edges.items()}) is not None
