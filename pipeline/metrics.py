"""Landmark metrics as pure functions on pixel arrays; training-time validation and the evaluate
stage both call these, so a number means the same thing everywhere.

Shapes: predictions and targets (N, joints, 2) in pixels of the original image; ``hand_size`` (N,)
in pixels (larger side of the reference landmarks' box, see ``keypoints.hand_size``).
"""

from __future__ import annotations

import numpy as np

from pipeline.keypoints import hand_size, to_pixels

PCK_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.2)
# PCK curve for the AUC: 0 to 0.2 of hand size, where the interesting differences between
# landmark models lie (beyond that almost every joint is "correct").
AUC_MAX_THRESHOLD = 0.2
CURVE_THRESHOLDS: np.ndarray = np.linspace(0.0, AUC_MAX_THRESHOLD, 41)


def joint_errors(predicted_px: np.ndarray, target_px: np.ndarray) -> np.ndarray:
    """Euclidean distance per joint, (N, joints)."""
    predicted_px = np.asarray(predicted_px, dtype=np.float64)
    target_px = np.asarray(target_px, dtype=np.float64)
    if predicted_px.shape != target_px.shape or predicted_px.shape[-1] != 2:
        raise ValueError(
            f"shape mismatch: predicted {predicted_px.shape} vs target {target_px.shape}"
        )
    return np.linalg.norm(predicted_px - target_px, axis=-1)


def mpjpe(errors: np.ndarray, normaliser: np.ndarray | float = 1.0) -> float:
    """Mean per-joint position error; with a per-sample normaliser, in units of it."""
    errors = np.asarray(errors, dtype=np.float64)
    normaliser = np.broadcast_to(np.asarray(normaliser, dtype=np.float64), errors.shape[:1])
    return float(np.mean(errors / normaliser[:, None]))


def pck(errors: np.ndarray, hand_size: np.ndarray, threshold: float) -> float:
    """Fraction of joints closer than ``threshold`` × hand size to the reference."""
    errors = np.asarray(errors, dtype=np.float64)
    return float(np.mean(errors < threshold * np.asarray(hand_size, dtype=np.float64)[:, None]))


def pck_curve(
    errors: np.ndarray, hand_size: np.ndarray, thresholds: np.ndarray = CURVE_THRESHOLDS
) -> np.ndarray:
    return np.array([pck(errors, hand_size, t) for t in thresholds])


def auc(thresholds: np.ndarray, pck_values: np.ndarray) -> float:
    """Area under the PCK curve, normalised to [0, 1] by the threshold range."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pck_values = np.asarray(pck_values, dtype=np.float64)
    span = thresholds[-1] - thresholds[0]
    area = np.sum((pck_values[1:] + pck_values[:-1]) * np.diff(thresholds)) / 2.0
    return float(area / span)


def landmark_metrics(
    predicted_px: np.ndarray, target_px: np.ndarray, hand_size: np.ndarray, image_width: np.ndarray
) -> dict[str, float]:
    """The headline numbers for one comparison (prediction vs reference)."""
    errors = joint_errors(predicted_px, target_px)
    result = {
        "mpjpe_px": mpjpe(errors),
        "mpjpe_norm_width": mpjpe(errors, image_width),
        "mpjpe_norm_hand": mpjpe(errors, hand_size),
    }
    for threshold in PCK_THRESHOLDS:
        # pck_05, pck_10, pck_20: percent of hand size (no dots: DVC flattens keys on dots)
        result[f"pck_{round(threshold * 100):02d}"] = pck(errors, hand_size, threshold)
    result["auc"] = auc(CURVE_THRESHOLDS, pck_curve(errors, hand_size))
    return {key: round(value, 6) for key, value in result.items()}


def compare_landmarks(
    predicted: np.ndarray, reference: np.ndarray, width: np.ndarray, height: np.ndarray
) -> dict[str, float]:
    """``landmark_metrics`` of ``predicted`` vs ``reference``, both (N, joints, >=2) fractions of
    each image (the label table's units); hand size from the reference."""
    predicted_px = to_pixels(predicted, width, height)
    reference_px = to_pixels(reference, width, height)
    return landmark_metrics(predicted_px, reference_px, hand_size(reference_px), width)


def validation_metrics(
    predicted: np.ndarray, reference: np.ndarray, width: np.ndarray, height: np.ndarray
) -> dict[str, float]:
    """``compare_landmarks`` plus ``z_mae``, the mean absolute error of MediaPipe's relative depth
    (both (N, joints, 3)): what training-time validation and the evaluate stage report."""
    metrics = compare_landmarks(predicted, reference, width, height)
    z_error = np.abs(np.asarray(predicted)[..., 2] - np.asarray(reference)[..., 2])
    metrics["z_mae"] = round(float(np.mean(z_error)), 6)
    return metrics


def presence_agreement(
    presence: np.ndarray, teacher_found: np.ndarray, threshold: float = 0.5
) -> dict[str, float | None]:
    """How often the student's presence (probabilities, a hand at ``threshold`` and above)
    agrees with the teacher's verdict (``teacher_found``, bool):

    - ``presence_recall``: of the teacher's detections, the fraction where the student says hand;
    - ``presence_precision``: of the student's "hand", the fraction the teacher also found;
    - ``no_hand_agreement``: of the images without a teacher hand, the fraction where the student
      says no hand.

    A fraction of nothing (e.g. no image without a hand) is None.
    """
    says_hand = np.asarray(presence, dtype=np.float64) >= threshold
    found = np.asarray(teacher_found, dtype=bool)

    def fraction(hits: np.ndarray, of: np.ndarray) -> float | None:
        return round(float(hits[of].mean()), 6) if of.any() else None

    return {
        "presence_recall": fraction(says_hand, found),
        "presence_precision": fraction(found, says_hand),
        "no_hand_agreement": fraction(~says_hand, ~found),
    }
