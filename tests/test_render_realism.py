"""The realism benchmark's split of renders by view (benchmarks/render_realism.py): which way
round a hand lies in the picture, which side of it faces the camera, and where in the hand's
own frame a joint is read."""

from __future__ import annotations

import numpy as np

from benchmarks.render_realism import hand_frame_offsets, turn_sign, views
from pipeline.sources.synthetic import render_hand
from pipeline.sources.synthetic.kinematics import GESTURE_CLASSES
from pipeline.sources.synthetic.subjects import make_subject_styles


def upright_right_palm(width: float = 200.0) -> np.ndarray:
    """A right hand's palm as it faces the camera, fingers up: the thumb (joints 1-4) and the
    index knuckle (5) on the picture's right, the little finger's knuckle (17) on its left."""
    hand = np.zeros((21, 2))
    hand[:, 0], hand[:, 1] = width / 2, 150.0
    hand[1:5, 0] = [120, 135, 145, 155]
    hand[1:5, 1] = [140, 125, 110, 100]
    for base, x in zip((5, 9, 13, 17), (115, 102, 90, 78)):
        hand[base : base + 4, 0] = x
        hand[base : base + 4, 1] = [100, 80, 65, 50]
    return hand


def mirrored(hand: np.ndarray, width: float = 200.0) -> np.ndarray:
    """The hand as a mirror would show it, about the picture's vertical centre line."""
    return np.column_stack([width - hand[:, 0], hand[:, 1]])


def test_a_mirror_image_turns_the_other_way():
    hand = upright_right_palm()
    hands = np.stack([hand, mirrored(hand)])
    np.testing.assert_array_equal(turn_sign(hands), [-1, 1])
    # Rotating a hand in the picture does not turn it over.
    angle = np.deg2rad(150)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_array_equal(turn_sign((hands - 100.0) @ rotation.T), [-1, 1])


def test_views_follow_handedness_and_the_turn():
    hand = upright_right_palm()
    hands = np.stack([hand, hand, mirrored(hand), mirrored(hand)])
    handedness = np.array(["Right", "Left", "Left", "Right"])
    # A left hand's palm is a right hand's palm mirrored; a left hand lying as a right palm
    # does shows its back.
    np.testing.assert_array_equal(views(hands, handedness), ["palm", "back", "palm", "back"])


def test_views_of_renders_split_as_the_renderer_draws_them():
    """The renderer shows the back of the hand with a chance of 0.3 (render.py); the split by
    view must find about that share among seeded renders, and both hands on both sides."""
    rng = np.random.default_rng(3)
    styles = make_subject_styles(rng, 6)
    truth, handedness = [], []
    for index in range(100):
        hand = render_hand(rng, GESTURE_CLASSES[index % 10], styles[index % 6], 160, 120)
        truth.append(hand.landmarks_px)
        handedness.append(hand.handedness)
    found = views(np.array(truth), np.array(handedness))
    back = found == "back"
    assert 0.15 <= back.mean() <= 0.45, back.mean()  # 0.3 ± 3 binomial sd of 100 draws
    for side in (back, ~back):
        assert set(np.array(handedness)[side]) == {"Left", "Right"}


def test_offsets_are_in_palm_lengths_across_and_along_the_hand():
    # Fingers up (towards smaller y), the index finger's side on the picture's right; the palm
    # (wrist to middle knuckle) 50 px long.
    hand = upright_right_palm()
    hand[9] = hand[0] + (0.0, -50.0)
    read = np.stack([hand + (5.0, 0.0), hand + (0.0, -10.0), hand])
    read[2, 4] += (-2.5, 5.0)  # one joint: towards the little finger, towards the wrist
    offsets = hand_frame_offsets(read, np.stack([hand] * 3))
    np.testing.assert_allclose(offsets[0], np.tile([0.1, 0.0], (21, 1)), atol=1e-12)
    np.testing.assert_allclose(offsets[1], np.tile([0.0, 0.2], (21, 1)), atol=1e-12)
    expected = np.zeros((21, 2))
    expected[4] = (-0.05, -0.1)
    np.testing.assert_allclose(offsets[2], expected, atol=1e-12)


def test_offsets_do_not_depend_on_how_the_hand_lies_in_the_picture():
    """Turned, scaled, moved or mirrored, the same misreading gives the same offsets: a left
    hand's "towards the thumb" is the other way round in the picture."""
    rng = np.random.default_rng(0)
    truth = upright_right_palm()
    read = truth + rng.normal(0, 4, truth.shape)
    angle = np.deg2rad(-117)
    turn = 1.7 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def moved(hand):
        return hand @ turn.T + (40.0, -15.0)

    reference = hand_frame_offsets(read[None], truth[None])
    for how in (moved, mirrored, lambda hand: moved(mirrored(hand))):
        np.testing.assert_allclose(
            hand_frame_offsets(how(read)[None], how(truth)[None]), reference, atol=1e-12
        )
