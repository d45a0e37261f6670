"""The layering rules of README "Architecture", checked on the source (every import, at any depth).

- anunet_core imports neither Ray, MLflow nor anunet_platform;
- no import cycle between modules;
- a stage (ingest, train, tune, compare, segment, evaluate) imports no other stage, only the shared
  layer (contracts, registry, selection, calibration, qc, cluster, precision, logs); the allowed exceptions
  are tune -> train (a tuning trial is a training run) and compare -> train, tune (the comparison is
  a grid of training runs, sized and reported to Tune as tuning trials are);
- only the registry package imports mlflow;
- the vocabulary, the error formatter and the contracts are defined once: no other module
  assigns DEPTHS, ORGANS, MODALITIES, ARCHS, SLICE_SCHEMA or MANIFEST_SCHEMA, or defines a
  ``_one_line``/``case_error``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"anunet_core": REPO / "anunet_core", "anunet_platform": REPO / "platform" / "anunet_platform"}
STAGES = ("ingest", "train", "tune", "compare", "segment", "evaluate")
SHARED = ("contracts", "registry", "selection", "calibration", "qc", "cluster", "precision", "logs")
ALLOWED_STAGE_IMPORTS = {("tune", "train"), ("compare", "train"), ("compare", "tune")}


def _module_name(path: Path) -> str:
    for package, root in ROOTS.items():
        if root in path.parents or path.parent == root:
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join((package, *parts))
    raise ValueError(path)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS.values():
        for path in sorted(root.rglob("*.py")):
            found[_module_name(path)] = path
    return found


@cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports (``from X import Y`` counts as ``X.Y`` when that is a
    module of ours), at module level or inside functions."""
    path = modules()[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.add(candidate if candidate in modules() else base)
    return frozenset(out)


def _ours(names) -> set[str]:
    return {n for n in names if n.split(".")[0] in ROOTS}


def test_the_source_tree_is_found() -> None:
    assert {"anunet_core.vocabulary", "anunet_core.errors", "anunet_platform.contracts"} <= set(modules())
    assert "anunet_core.io.dicom" in imports("anunet_core.archives.chaos")


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith("anunet_core")))
def test_core_has_no_infrastructure(module: str) -> None:
    bad = {n for n in imports(module) if n.split(".")[0] in ("ray", "mlflow", "anunet_platform")}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_no_import_cycles() -> None:
    graph = {m: {n for n in _ours(imports(m)) if n in modules() and n != m} for m in modules()}
    # A package's __init__ re-exporting its own submodules is not a cycle of concepts: leave
    # those edges out, and so the edges into a package from its own submodules are real ones.
    for m, targets in graph.items():
        if modules()[m].name == "__init__.py":
            graph[m] = {t for t in targets if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _stage_of(module: str) -> str | None:
    """The stage a platform module belongs to (``tune.report`` is part of ``tune``), or None."""
    parts = module.split(".")
    if parts[0] != "anunet_platform" or len(parts) < 2:
        return None
    return next((stage for stage in STAGES if parts[1] == stage or parts[1].startswith(stage + "_")), None)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(stage: str) -> None:
    own = [m for m in modules() if _stage_of(m) == stage]
    assert own, stage
    for module in own:
        for target in _ours(imports(module)):
            other = _stage_of(target)
            if other is not None and other != stage:
                assert (stage, other) in ALLOWED_STAGE_IMPORTS, f"{module} imports the stage {target}"
            if target.startswith("anunet_platform.") and other is None:
                assert target.split(".")[1] in SHARED, f"{module} imports {target}, which is not shared"


def test_only_the_registry_imports_mlflow() -> None:
    users = sorted(m for m in modules() if any(n.split(".")[0] == "mlflow" for n in imports(m)))
    assert users and all(m.startswith("anunet_platform.registry") for m in users), users


@pytest.mark.parametrize(
    "name,home",
    [
        ("DEPTHS", "anunet_core.vocabulary"),
        ("ORGANS", "anunet_core.vocabulary"),
        ("MODALITIES", "anunet_core.vocabulary"),
        ("MAX_DEPTH", "anunet_core.vocabulary"),
        ("ARCHS", "anunet_core.vocabulary"),
        ("NESTED_ARCHS", "anunet_core.vocabulary"),
        ("SLICE_SCHEMA", "anunet_platform.contracts"),
        ("MANIFEST_SCHEMA", "anunet_platform.contracts"),
    ],
)
def test_each_concept_is_defined_once(name: str, home: str) -> None:
    defined = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                defined.append(module)
    assert defined == [home]


def test_one_error_formatter() -> None:
    formatters = sorted(
        f"{module}.{node.name}"
        for module, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name in ("_one_line", "one_line", "case_error", "_case_error")
    )
    assert formatters == ["anunet_core.errors.one_line"]
