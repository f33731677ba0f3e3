"""Split filter rules, each on a hand-made label table."""

import numpy as np
import pandas as pd

from pipeline.keypoints import NUM_JOINTS
from pipeline.params import SplitParams
from pipeline.schema import BOX_COLUMNS, LANDMARK_COLUMNS
from pipeline.splitting import filter_labels, split_metrics


def row(name, split="train", hands=1, score=0.9, xy=(0.4, 0.6), box=(256.0, 192.0, 128.0, 96.0)):
    base = {"path": name, "split": split, "class_name": "A", "width": 640, "height": 480,
            "num_hands": hands, "handedness_score": score if hands else np.nan}  # fmt: skip
    points = np.zeros((NUM_JOINTS, 3))
    points[:, 0] = np.linspace(*xy, NUM_JOINTS)
    points[:, 1] = np.linspace(*xy, NUM_JOINTS)
    if not hands:
        points[:] = np.nan
    base.update(zip(LANDMARK_COLUMNS, points.reshape(-1)))
    base.update(zip(BOX_COLUMNS, box if box else (np.nan,) * 4))
    return base


def test_each_rule_drops_with_its_reason_and_the_rest_is_kept():
    table = pd.DataFrame([
        row("good.png"),
        row("good_no_box.png", split="test", box=None),
        row("none.png", hands=0),
        row("two.png", hands=2),
        row("unsure.png", score=0.2),
        row("outside.png", xy=(0.5, 1.2)),
        row("elsewhere.png", split="validation", box=(0.0, 0.0, 50.0, 50.0)),
    ])  # fmt: skip
    result = filter_labels(table, SplitParams())
    # an image without a hand is kept, as a negative for the presence head
    assert list(result.kept["path"]) == ["good.png", "good_no_box.png", "none.png"]
    assert list(result.kept["has_hand"]) == [True, True, False]
    assert dict(zip(result.dropped["path"], result.dropped["reason"])) == {
        "two.png": "too_many_hands",
        "unsure.png": "low_handedness_score",
        "outside.png": "landmarks_outside_image",
        "elsewhere.png": "box_disagreement",
    }
    assert all(result.dropped["detail"].str.len() > 0)
    metrics = split_metrics(result, skipped_before=3)
    assert (
        metrics["kept"] == 3
        and metrics["negatives"] == 1
        and metrics["dropped"] == 4
        and metrics["skipped_unreadable_or_unlisted"] == 3
    )
    assert metrics["train"] == {"kept": 2, "negatives": 1, "dropped": 3}
    assert metrics["validation"] == {"kept": 0, "negatives": 0, "dropped": 1}
    assert metrics["dropped_by_reason"]["box_disagreement"] == 1


def test_rules_follow_their_params():
    table = pd.DataFrame(
        [
            row("two.png", hands=2),
            row("unsure.png", score=0.2),
            row("elsewhere.png", box=(0, 0, 50, 50)),
        ]
    )
    relaxed = SplitParams(max_hands=2, min_handedness_score=0.1, min_box_iou=0.0)
    assert len(filter_labels(table, relaxed).kept) == 3
    margin = pd.DataFrame([row("edge.png", xy=(0.5, 1.04), box=None)])
    assert len(filter_labels(margin, SplitParams(out_of_image_margin=0.05)).kept) == 1
    assert len(filter_labels(margin, SplitParams(out_of_image_margin=0.0)).kept) == 0


def test_a_frame_without_a_teacher_hand_is_a_negative_even_with_a_source_box():
    """OUHANDS and the renderer give a box for every hand; where the teacher missed the hand the
    frame is still a presence negative (the student mimics the teacher), not a box drop."""
    table = pd.DataFrame([row("missed.png", hands=0), row("no_box.png", hands=0, box=None)])
    result = filter_labels(table, SplitParams())
    assert list(result.kept["path"]) == ["missed.png", "no_box.png"]
    assert not result.kept["has_hand"].any() and result.dropped.empty
