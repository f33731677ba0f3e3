"""The project files a module runs when it is imported, found by reading the source (ast).

Two users: the test that keeps each dvc.yaml stage's deps equal to its imports, and the
checkpoint's code digest, which must change exactly when the code that trains changes (a file
the train stages do not import must not make their outputs differ between two clones).
"""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_PACKAGES = ("pipeline", "stages")
# The checkout's root: the folder that holds the project's packages.
REPO = Path(__file__).resolve().parents[1]


def module_file(module: str, root: Path = REPO) -> Path | None:
    """The file of a project module (``pipeline.data`` → pipeline/data.py), or None."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module named by an import anywhere in the file (functions included), with the
    packages each one runs on the way (``a.b.c`` imports ``a`` and ``a.b`` first)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package upwards
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            # `from pipeline import distributed` imports the module pipeline.distributed
            names.update(f"{base}.{alias.name}" for alias in node.names)
    with_parents = set()
    for name in names:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def imported_files(module: str, root: Path = REPO) -> set[Path]:
    """The project files that importing ``module`` runs, transitively (lazy imports inside
    functions included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]), root)
            if path is None or path in seen:
                continue
            seen.add(path)
            owner = ".".join(parts[:i])
            todo.extend(_imported_modules(path, owner))
    return seen
