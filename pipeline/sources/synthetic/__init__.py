"""The synthetic source: a procedural renderer of OUHANDS-like hand photos whose 21 joint
positions are known exactly, and a writer of an OUHANDS-layout data set of its renders.

Modules, each importing only those listed before it:

- ``subjects``: who is photographed (skin tone, proportions, clothing);
- ``kinematics``: hand geometry, the gestures and the posed joint centres;
- ``raster``: the depth buffer of swept spheres and the palm slab, and the orthographic camera;
- ``render``: shading, backgrounds and camera effects; ``render_hand``;
- ``dataset``: ``write_synthetic_dataset``, the OUHANDS layout with ``true_landmarks.csv``.
"""

from pipeline.sources.synthetic.dataset import (
    LISTS_DIR,
    TEST_HAND_DIR,
    TRAIN_HAND_DIR,
    TRUTH_FILE,
    write_synthetic_dataset,
)
from pipeline.sources.synthetic.kinematics import (
    CONTACT_POSE,
    GESTURE_CLASSES,
    GESTURES,
    RANDOM_POSE,
)
from pipeline.sources.synthetic.render import RenderedHand, render_hand
from pipeline.sources.synthetic.subjects import SubjectStyle, make_subject_styles

__all__ = [
    "CONTACT_POSE",
    "GESTURES",
    "GESTURE_CLASSES",
    "LISTS_DIR",
    "RANDOM_POSE",
    "TEST_HAND_DIR",
    "TRAIN_HAND_DIR",
    "TRUTH_FILE",
    "RenderedHand",
    "SubjectStyle",
    "make_subject_styles",
    "render_hand",
    "write_synthetic_dataset",
]
