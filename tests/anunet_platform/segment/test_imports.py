"""The segment package's boundaries: it takes the layout from contracts, never from the stages
it feeds (evaluate) or shares code with (ingest), and Ray only where the pipeline runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from anunet_platform import segment

PACKAGE = Path(segment.__file__).parent
FORBIDDEN = ("anunet_platform.evaluate", "anunet_platform.ingest")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_of_the_package_imports_evaluate_or_ingest() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert {f.stem for f in files} >= {"__init__", "config", "plan", "resume", "model", "stages", "pipeline", "job"}
    for path in files:
        bad = sorted(n for n in _imported_modules(path) if n.startswith(FORBIDDEN))
        assert bad == [], f"{path.name} imports {bad}"


def test_importing_the_package_loads_neither_evaluate_nor_ingest_nor_ray() -> None:
    modules = ", ".join(f"'{m}'" for m in (*FORBIDDEN, "ray"))
    code = (
        "import sys, anunet_platform.segment, anunet_platform.segment.stages, anunet_platform.segment.job; "
        f"print(sorted(m for m in ({modules},) if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
