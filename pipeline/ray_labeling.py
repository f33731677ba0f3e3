"""The labeling of ``pipeline.labeling`` on a Ray cluster (``landmarks.engine: ray``).

Ray Data reads the image list; a pool of actors, each holding one MediaPipe ``Teacher`` created
once, reads, decodes and labels the images. Rows are built by ``labeling.image_fields`` and the
table by ``labeling.build_table``, so the table (columns, dtypes, values, order) and the skipped
files (same reasons) are those of the local engine.

An actor reads its images itself: a local path with ``read_image`` exactly as the local engine
does, a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``) through pyarrow's filesystems,
decoded by the same ``decode_image``. Ray is an optional dependency (``pip install -e ".[ray]"``),
imported only here.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.images import ImageReadError, decode_image, read_image
from pipeline.keypoints import NUM_JOINTS
from pipeline.labeling import LabelingResult, build_table, image_fields
from pipeline.machine import available_cores
from pipeline.params import LandmarksParams
from pipeline.progress import progress as progress_bar
from pipeline.sources import DataListing
from pipeline.teacher import Teacher, sha256_of

INSTALL_HINT = 'pip install -e ".[ray]"'
# Ray Data schedules its own tasks (and, with a file reader, its read tasks) beside the actors.
# Measured on a 2-CPU local cluster: 2 actors at 1 CPU each starved them and hung; at 0.5 CPU
# each the same map finished. So the actors ask for half of the cluster's CPUs between them.
ACTOR_SHARE_OF_CLUSTER = 0.5


class RayLabelingError(RuntimeError):
    """Ray is missing, the cluster cannot run the labeling, or the labeling stalled."""


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    cpus_per_actor: float  # Ray's logical CPUs: what the scheduler reserves, not a core pinning
    batch_size: int  # images per actor call
    cluster_cpus: float


def plan_actors(cluster_cpus: float, workers: int, images: int) -> ActorPlan:
    """``workers`` actors (0: one per cluster CPU), together asking for half the cluster's CPUs."""
    if cluster_cpus <= 0:
        raise RayLabelingError(
            "the Ray cluster has no CPUs; start its nodes with CPUs or set landmarks.engine=local"
        )
    actors = max(1, min(workers or int(cluster_cpus), images))
    share = math.floor(100 * min(1.0, ACTOR_SHARE_OF_CLUSTER * cluster_cpus / actors)) / 100
    batch_size = max(1, min(16, images // (actors * 8)))  # small: the work stays balanced
    return ActorPlan(actors, max(share, 0.01), batch_size, cluster_cpus)


def read_image_at(location: str) -> np.ndarray:
    """``read_image`` for a local path, pyarrow's filesystems for a URI; same skip reasons."""
    if "://" not in location:
        return read_image(location)
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(location)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ImageReadError(location, "file not found")
        if info.type == pafs.FileType.Directory:
            raise ImageReadError(location, "is a directory, not an image")
        with filesystem.open_input_file(path) as handle:
            data = handle.read()
    except (OSError, pa.ArrowException) as error:
        raise ImageReadError(location, f"cannot be read: {error}") from None
    return decode_image(data, location)


def _node_model_path(model_path: str, sha256: str, model_ref: list) -> str:
    """The driver's model file where this node sees it (one machine, a shared folder), else a
    copy fetched from the object store into the node's temp folder, named by its hash so actors
    and runs share it."""
    if Path(model_path).is_file() and sha256_of(model_path) == sha256:
        return model_path
    copy = Path(tempfile.gettempdir()) / f"lhl-teacher-{sha256[:16]}.task"
    if not copy.is_file() or sha256_of(copy) != sha256:
        import ray

        partial = copy.with_name(f"{copy.name}.partial-{os.getpid()}")
        partial.write_bytes(ray.get(model_ref[0]))
        partial.replace(copy)
    return str(copy)


class _TeacherActor:
    """One per actor: the teacher is built once, then labels batches of (index, location)."""

    def __init__(self, model_path: str, sha256: str, model_ref: list, settings: LandmarksParams):
        # model_ref is a one-item list so that Ray hands the reference over, not the bytes.
        self._teacher = Teacher(_node_model_path(model_path, sha256, model_ref), settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fields: list[dict | None] = []
        problems: list[str] = []
        for location in batch["location"]:
            try:
                rgb = read_image_at(str(location))
            except ImageReadError as error:
                fields.append(None)
                problems.append(error.reason)
                continue
            fields.append(image_fields(rgb, self._teacher.detect(rgb)))
            problems.append("")
        return {"index": batch["index"], **_to_columns(fields, problems)}

    def __del__(self) -> None:
        teacher = getattr(self, "_teacher", None)
        if teacher is not None:
            teacher.close()


def _to_columns(fields: list[dict | None], problems: list[str]) -> dict[str, np.ndarray]:
    """``image_fields`` dicts as Ray Data columns (NaN landmarks where there is no hand)."""
    nan = np.full(NUM_JOINTS * 3, np.nan, dtype=np.float32)
    present = [f or {"width": 0, "height": 0, "num_hands": 0, "handedness": ""} for f in fields]
    return {
        "problem": np.array(problems, dtype=object),
        "width": np.array([f["width"] for f in present], dtype=np.int64),
        "height": np.array([f["height"] for f in present], dtype=np.int64),
        "num_hands": np.array([f["num_hands"] for f in present], dtype=np.int64),
        "handedness": np.array([f["handedness"] for f in present], dtype=object),
        "handedness_score": np.array(
            [f.get("handedness_score", np.nan) for f in present], dtype=np.float64
        ),
        "landmarks": np.stack([f.get("landmarks", nan) for f in present]),
        "world": np.stack([f.get("world", nan) for f in present]),
    }


def _from_columns(batch: dict[str, np.ndarray]) -> list[tuple[int, dict | None, str | None]]:
    """The inverse of ``_to_columns``: the ``(index, image_fields, reason)`` of each image."""
    results: list[tuple[int, dict | None, str | None]] = []
    for i, index in enumerate(batch["index"]):
        if batch["problem"][i]:
            results.append((int(index), None, str(batch["problem"][i])))
            continue
        fields: dict = {
            "width": int(batch["width"][i]),
            "height": int(batch["height"][i]),
            "num_hands": int(batch["num_hands"][i]),
            "handedness": str(batch["handedness"][i]),
            "handedness_score": float(batch["handedness_score"][i]),
        }
        if fields["num_hands"]:
            fields["landmarks"] = np.asarray(batch["landmarks"][i], dtype=np.float32)
            fields["world"] = np.asarray(batch["world"][i], dtype=np.float32)
        results.append((int(index), fields, None))
    return results


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayLabelingError(
            f"landmarks.engine=ray needs Ray Data: {INSTALL_HINT} (or set landmarks.engine=local)"
        ) from None
    if not hasattr(ray.data.DataContext, "execution_no_progress_timeout_s"):
        raise RayLabelingError(
            f"Ray {ray.__version__} has no Ray Data no-progress guard (landmarks.ray_timeout_s); "
            f"landmarks.engine=ray needs ray[data]>=2.60: {INSTALL_HINT}"
        )
    return ray


def connect(address: str = "", num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` ("auto", "host:6379", "ray://host:10001") or, when it is
    empty, start a private local one with ``num_cpus`` (default: this process's cores)."""
    ray = _import_ray()
    if address:
        # The actors run the driver's copy of the package, whatever the nodes have installed.
        package = str(Path(__file__).resolve().parent)
        ray.init(
            address=address,
            runtime_env={"py_modules": [package]},
            logging_level="WARNING",
            log_to_driver=False,  # MediaPipe's chatter; the logs stay under /tmp/ray/session_*
        )
    else:
        cores = num_cpus or available_cores()
        # "local": never join a cluster that someone else started on this machine.
        ray.init(
            address="local",
            num_cpus=cores,
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=False,  # MediaPipe's chatter; the logs stay under /tmp/ray/session_*
        )


def label_images_ray(
    listing: DataListing,
    model_path: str | Path,
    settings: LandmarksParams,
    workers: int = 0,
    progress: bool = True,
    address: str = "",
    timeout_s: float = 600.0,
    image_root: str | None = None,
) -> LabelingResult:
    """``labeling.label_images`` on Ray: ``workers`` actors (0: one per cluster CPU).

    Uses the Ray session of this process if there is one, else connects to ``address`` (see
    ``connect``) and disconnects at the end. ``image_root`` reads the listed files from another
    root with the same layout (e.g. ``s3://bucket/OUHANDS``) instead of ``listing.root``.
    ``seconds`` covers the actors' start-up and the labeling, not the cluster's start-up.
    Raises ``RayLabelingError`` when the run makes no progress for ``timeout_s`` seconds (Ray
    Data's no-progress guard, which also stops the run's actors).
    """
    ray = _import_ray()
    model_path = str(Path(model_path).resolve())
    if not Path(model_path).is_file():
        raise RayLabelingError(f"teacher model {model_path} not found; run `dvc repro teacher`")
    root = image_root.rstrip("/") if image_root else str(Path(listing.root).resolve())
    locations = [f"{root}/{record.path}" for record in listing.records]
    connected_here = not ray.is_initialized()
    if connected_here:
        connect(address)
    try:
        plan = plan_actors(ray.cluster_resources().get("CPU", 0.0), workers, len(locations))
        started = time.perf_counter()
        results = _run(ray, locations, model_path, settings, plan, progress, timeout_s)
        seconds = time.perf_counter() - started
    finally:
        if connected_here:
            ray.shutdown()
    if sorted(index for index, _, _ in results) != list(range(len(locations))):
        raise RayLabelingError(
            f"Ray returned {len(results)} results for {len(locations)} images (lost or repeated "
            "ones); rerun, or set landmarks.engine=local"
        )
    table, skipped = build_table(listing, results)
    return LabelingResult(table=table, skipped=skipped, seconds=seconds)


def _run(ray, locations, model_path, settings, plan, progress, timeout_s) -> list:
    from ray.data.exceptions import ExecutionTimeoutError

    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.execution_no_progress_timeout_s
    context.enable_progress_bars = False  # our own bar, as with the local engine
    # Ray Data's own guard: a run without progress for this long stops, with its actors.
    context.execution_no_progress_timeout_s = timeout_s
    results: list = []
    bar = progress_bar(len(locations), "teacher (ray)", "img", progress)
    try:
        dataset = _dataset(ray, locations, model_path, settings, plan)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            labelled = _from_columns(batch)
            results.extend(labelled)
            bar.update(len(labelled))
    except ExecutionTimeoutError as error:
        message = _stall_message(len(results), len(locations), plan, timeout_s)
        raise RayLabelingError(message) from error
    finally:
        bar.close()
        context.enable_progress_bars, context.execution_no_progress_timeout_s = saved
    return results


def _dataset(ray, locations, model_path, settings, plan):
    model = Path(model_path).read_bytes()
    items = [{"index": i, "location": location} for i, location in enumerate(locations)]
    blocks = min(len(items), 1000, math.ceil(len(items) / plan.batch_size))
    return ray.data.from_items(items, override_num_blocks=max(blocks, 1)).map_batches(
        _TeacherActor,
        fn_constructor_args=(model_path, sha256_of(model), [ray.put(model)], settings),
        batch_size=plan.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
    )


def _stall_message(done: int, total: int, plan: ActorPlan, timeout_s: float) -> str:
    return (
        f"Ray labeling made no progress for {timeout_s:g} s ({done} of {total} images labelled, "
        f"{plan.actors} teacher actors at {plan.cpus_per_actor:g} CPU each on a cluster of "
        f"{plan.cluster_cpus:g} CPUs). If no image was labelled, the actors could not start or "
        "leave no CPU to Ray Data's own tasks: lower landmarks.workers, or give the cluster more "
        "CPUs (see `ray status`). If single images are this slow (huge photos, a slow bucket), "
        "raise landmarks.ray_timeout_s. landmarks.engine=local labels the same table without Ray."
    )
