"""Atomic writes: an output appears only complete; DVC never takes a half-written file.

Nothing here deletes what the project did not create: a file output never replaces a directory,
and a directory output replaces only a directory that an earlier ``atomic_path`` wrote (it holds
``OWN_DIRECTORY_MARKER``). The only things removed are this process's own partial files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

# Written into every directory output, so that a later run may replace it (and nothing else).
OWN_DIRECTORY_MARKER = ".written-by-learned-hand-landmarks"


class OutputPathError(ValueError):
    """An output path that would replace a directory or overwrite an input."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; it replaces ``path`` only if the block succeeds.

    The block writes a file or a directory there. A file never replaces a directory; a
    directory replaces only an earlier directory output of this project.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and not (path / OWN_DIRECTORY_MARKER).is_file():
        raise OutputPathError(
            f"{path} is a directory that this project did not write; refusing to replace it "
            "(choose another output path, or move the directory away)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove_partial(partial)  # a leftover of an earlier run of this process id
    try:
        yield partial
        if partial.is_dir():
            (partial / OWN_DIRECTORY_MARKER).write_text(
                "This directory is an output of the learned-hand-landmarks pipeline; the next run "
                "may replace it.\n"
            )
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)  # our own earlier output (checked above)
        elif path.is_dir() and not path.is_symlink():
            raise OutputPathError(f"{path} is a directory; refusing to replace it with a file")
        os.replace(partial, path)
    finally:
        _remove_partial(partial)


def _remove_partial(partial: Path) -> None:
    if partial.is_dir() and not partial.is_symlink():
        shutil.rmtree(partial, ignore_errors=True)
    elif partial.exists() or partial.is_symlink():
        partial.unlink()


def _contains(folder: Path, path: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_file(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """An output file must not be a directory, and must not be or lie inside any of ``inputs``
    (files or folders). Raises OutputPathError naming the path."""
    output = Path(output)
    if output.is_dir():
        raise OutputPathError(f"output {output} is a directory; give a file path")
    resolved = output.resolve()
    for item in inputs:
        item = Path(item)
        if _contains(item.resolve(), resolved):
            where = (
                "is the input" if item.resolve() == resolved else f"lies inside the input {item}"
            )
            raise OutputPathError(f"output {output} {where}; write it somewhere else")


def check_output_folder(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """An output folder and each input (file or folder) must not contain one another."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{folder} exists and is not a folder")
    resolved = folder.resolve()
    for item in inputs:
        item = Path(item)
        if _contains(item.resolve(), resolved) or _contains(resolved, item.resolve()):
            raise OutputPathError(
                f"output folder {folder} and the input {item} overlap (one holds the other): "
                "writing there could overwrite the inputs; choose a folder outside the input"
            )


def write_json(path: str | os.PathLike, payload: Any) -> None:
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    path = Path(path)
    with atomic_path(path) as partial:
        if path.suffix == ".parquet":
            table.to_parquet(partial, index=False)
        else:
            table.to_csv(partial, index=False)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the stage that writes it (`dvc repro`)")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
