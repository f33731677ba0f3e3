"""Metric functions against values worked out by hand."""

import numpy as np
import pytest

from pipeline.keypoints import NUM_JOINTS, hand_size
from pipeline.metrics import auc, joint_errors, landmark_metrics, mpjpe, pck, pck_curve


def test_joint_errors_and_mpjpe_by_hand():
    target = np.zeros((2, NUM_JOINTS, 2))
    predicted = target.copy()
    predicted[0, :, 0] = 3.0  # 3 px right
    predicted[1, :, :] = [3.0, 4.0]  # 5 px away
    errors = joint_errors(predicted, target)
    assert errors.shape == (2, NUM_JOINTS)
    np.testing.assert_allclose(errors[0], 3.0)
    np.testing.assert_allclose(errors[1], 5.0)
    assert mpjpe(errors) == pytest.approx(4.0)
    assert mpjpe(errors, np.array([3.0, 10.0])) == pytest.approx((1.0 + 0.5) / 2)


def test_pck_counts_joints_under_threshold_of_hand_size():
    errors = np.array([[1.0] * 10 + [9.0] * 11, [0.0] * NUM_JOINTS])
    sizes = np.array([50.0, 50.0])
    assert pck(errors, sizes, 0.1) == pytest.approx((10 + 21) / 42)  # threshold 5 px
    assert pck(errors, sizes, 0.2) == pytest.approx(1.0)  # threshold 10 px
    assert pck(errors, sizes, 0.01) == pytest.approx(21 / 42)  # threshold 0.5 px


def test_auc_of_a_step_and_a_ramp():
    thresholds = np.linspace(0, 0.2, 5)
    assert auc(thresholds, np.ones(5)) == pytest.approx(1.0)
    assert auc(thresholds, np.linspace(0, 1, 5)) == pytest.approx(0.5)


def test_perfect_prediction_and_hand_size():
    points = np.random.default_rng(0).uniform(100, 200, (3, NUM_JOINTS, 2))
    points[:, 0] = [100, 100]
    points[:, 1] = [200, 150]  # box spans 100 x >=50 → hand size 100
    np.testing.assert_allclose(hand_size(points), 100.0)
    metrics = landmark_metrics(points, points, hand_size(points), np.full(3, 640.0))
    assert (
        metrics["mpjpe_px"] == 0
        and metrics["pck_05"] == 1
        and metrics["auc"] == pytest.approx(1.0, abs=0.03)
    )
    curve = pck_curve(joint_errors(points + 5, points), hand_size(points))
    assert curve[0] == 0 and curve[-1] == 1 and np.all(np.diff(curve) >= 0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        joint_errors(np.zeros((1, NUM_JOINTS, 2)), np.zeros((2, NUM_JOINTS, 2)))
