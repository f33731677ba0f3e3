"""Stage landmarks: MediaPipe labels for every image of the data source, in one table.

``landmarks.engine`` picks worker processes on this machine (local) or actors on a Ray cluster
(ray); both write the same table. ``--source NAME`` labels the extra data set
``data.extra_sources.NAME`` instead of the main one (stage ``landmarks_source@NAME``), into
its own table, so that no data set is labelled again when another one changes.
"""

from __future__ import annotations

import argparse

from pipeline.io import write_json, write_table
from pipeline.labeling import label_images, labeling_metrics, require_labelled, skipped_table
from pipeline.params import load_params
from pipeline.paths import TEACHER_MODEL as MODEL
from pipeline.paths import labels_of
from pipeline.sources.listing import list_images
from pipeline.teacher import sha256_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--source", help="an extra data set's name (data.extra_sources)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    data, landmarks = params.data, params.landmarks
    if args.source is not None:
        if args.source not in data.extra_sources:
            parser.error(
                f"--source {args.source}: params.yaml has no data.extra_sources.{args.source} "
                f"(it has: {', '.join(data.extra_sources) or 'none'})"
            )
        data = data.extra_sources[args.source]
    table_path, skipped_path, metrics_path = labels_of(args.source)
    listing = list_images(data.source, data.root, **data.listing_options)
    if landmarks.engine == "ray":
        from pipeline.ray_labeling import label_images_ray

        result = label_images_ray(
            listing,
            MODEL,
            landmarks,
            landmarks.workers,
            progress=not args.no_progress,
            address=landmarks.ray_address,
            timeout_s=landmarks.ray_timeout_s,
        )
    else:
        result = label_images(
            listing, MODEL, landmarks, landmarks.worker_count, progress=not args.no_progress
        )
    require_labelled(result, data.root)  # before any output: nothing readable is an error
    metrics = labeling_metrics(result, sha256_of(MODEL))
    metrics["engine"] = landmarks.engine  # img/s depends on it; the table does not
    # The report and metrics first, the table last: the table is what the next stage consumes.
    write_table(skipped_path, skipped_table(result.skipped))
    write_json(metrics_path, metrics)
    write_table(table_path, result.table)
    print(
        (f"{args.source}: " if args.source else "")
        + f"labelled {metrics['images']} images, hand found in {metrics['detected']} "
        f"({metrics['detection_rate']:.1%}), {metrics['skipped']} skipped (see {skipped_path}), "
        f"{metrics['images_per_second']} img/s"
    )


if __name__ == "__main__":
    main()
