"""Read a data root with the reader of its source into a ``DataListing``."""

from __future__ import annotations

from pathlib import Path

from pipeline.sources import DataLayoutError, DataListing
from pipeline.sources.folders import list_folders
from pipeline.sources.ouhands import list_ouhands


def list_images(source: str, root: str | Path, **options) -> DataListing:
    """Read a data root with the reader of ``source`` (see ``pipeline.params.DataParams``).

    ``options`` (subject pattern, split fractions and seed) only apply to the folders source,
    since the OUHANDS layout brings its own official splits.
    """
    root = Path(root)
    if not root.exists():
        raise DataLayoutError(f"data root {root} does not exist; set data.root in params.yaml")
    if not root.is_dir():
        raise DataLayoutError(f"data root {root} is not a folder")
    if source in ("synthetic", "ouhands"):
        listing = list_ouhands(root, require_truth=source == "synthetic")
    elif source == "folders":
        listing = list_folders(root, **options)
    else:
        raise DataLayoutError(f"unknown data source {source!r}")
    if not listing.records:
        raise DataLayoutError(
            f"no usable images under {root} for source {source!r} "
            f"({len(listing.skipped)} files skipped"
            + (
                f", e.g. {listing.skipped[0].path}: {listing.skipped[0].reason}"
                if listing.skipped
                else ""
            )
            + ")"
        )
    return listing
