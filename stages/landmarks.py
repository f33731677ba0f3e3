"""Stage landmarks: MediaPipe labels for every image of the data source, in one table.

``landmarks.engine`` picks worker processes on this machine (local) or actors on a Ray cluster
(ray); both write the same table.
"""

from __future__ import annotations

import argparse

from pipeline.io import write_json, write_table
from pipeline.labeling import label_images, labeling_metrics, require_labelled, skipped_table
from pipeline.params import load_params
from pipeline.paths import LABELS as TABLE
from pipeline.paths import LANDMARKS_METRICS as METRICS
from pipeline.paths import SKIPPED
from pipeline.paths import TEACHER_MODEL as MODEL
from pipeline.sources.listing import list_images
from pipeline.teacher import sha256_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    data, landmarks = params.data, params.landmarks
    listing = list_images(
        data.source,
        data.root,
        subject_pattern=data.subject_pattern,
        validation_fraction=data.validation_fraction,
        test_fraction=data.test_fraction,
        split_seed=data.split_seed,
    )
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
    write_table(SKIPPED, skipped_table(result.skipped))
    write_json(METRICS, metrics)
    write_table(TABLE, result.table)
    print(
        f"labelled {metrics['images']} images, hand found in {metrics['detected']} "
        f"({metrics['detection_rate']:.1%}), {metrics['skipped']} skipped (see {SKIPPED}), "
        f"{metrics['images_per_second']} img/s"
    )


if __name__ == "__main__":
    main()
