"""Print ../constraints.txt: the exact version of every package the image installs.

The Dockerfile installs torch, then the project with ``mlflow[auth]`` (the basic-auth app of the
tracking server: Flask-WTF) and ``psycopg2-binary`` (PostgreSQL), each step under
``pip install -c constraints.txt``. This script walks the requirements of those roots through the
distributions installed in the environment that runs it (markers evaluated for that environment,
extras followed), checks that each installed version meets what asks for it, and prints one
``name==version`` line per package, sorted. Local version labels are dropped
(``torch==2.13.0+cpu`` -> ``torch==2.13.0``), so the GPU image's CUDA torch from PyPI meets the
same pin. Run it in the environment the tests passed in (Linux, Python 3.11, as the image)::

    make install                                             # .venv: the project, torch 2.13.0 CPU
    .venv/bin/pip install "mlflow[auth]" psycopg2-binary     # what the image adds
    .venv/bin/python docker/freeze_constraints.py > constraints.txt

A package that some requirement needs but that is not installed is an error (exit 1), never a
silent gap in the file.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECT = "anunet"
ROOTS = (PROJECT, "mlflow[auth]", "psycopg2-binary")  # what the Dockerfile's pip install lines name

HEADER = """\
# Every Python package the image installs, pinned: the Dockerfile runs each `pip install` with
# `-c constraints.txt`, so a rebuild gets exactly these versions (the Ray base image's own
# packages that the project does not need are left as they are). Generated from the project's
# virtualenv by docker/freeze_constraints.py; do not edit by hand. To regenerate (after changing
# a dependency in pyproject.toml or upgrading):
#   make install
#   .venv/bin/pip install "mlflow[auth]" psycopg2-binary
#   .venv/bin/python docker/freeze_constraints.py > constraints.txt
# torch==2.13.0 matches both the CPU wheel (2.13.0+cpu) and the CUDA wheel from PyPI; the GPU
# image's CUDA packages (nvidia-*, triton) are pinned exactly by that torch release itself.
"""


def closure(roots: tuple[str, ...]) -> dict[str, str]:
    """Canonical name -> installed version of the roots and everything they require."""
    pins: dict[str, str] = {}
    missing: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(root), "the image") for root in roots]
    while todo:
        requirement, wanted_by = todo.pop()
        name = canonicalize_name(requirement.name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            missing.append(f"{requirement} (for {wanted_by})")
            continue
        if not requirement.specifier.contains(dist.version, prereleases=True):
            sys.exit(f"{name} {dist.version} is installed, {wanted_by} needs {requirement}")
        pins[name] = dist.version
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        extras = {""} | set(requirement.extras)
        for text in dist.requires or []:
            dependency = Requirement(text)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                todo.append((dependency, name))
    if missing:
        sys.exit("not installed, install it first:\n  " + "\n  ".join(sorted(set(missing))))
    return pins


def main() -> None:
    pins = closure(ROOTS)
    pins.pop(PROJECT)
    lines = [f"{name}=={Version(version).public}" for name, version in sorted(pins.items())]
    sys.stdout.write(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
