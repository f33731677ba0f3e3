"""Who is photographed: one ``SubjectStyle`` per person (skin tone, proportions, clothing).

Every photo of a subject shares its style; ``make_subject_styles`` spreads the subjects' skin tones
over a ramp of real tones from very light to very dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SubjectStyle:
    """What stays the same across one person's photos: skin, proportions, clothing."""

    name: str  # e.g. "s03"
    skin_rgb: tuple[float, float, float]  # back of the hand, linear 0..1
    palm_rgb: tuple[float, float, float]  # palmar skin is lighter and pinker, most so on dark skin
    nail_rgb: tuple[float, float, float]
    sleeve_rgb: tuple[float, float, float]
    bare_arm: bool  # True: no sleeve in sight
    finger_length: float  # multiplies the finger bone lengths
    palm_width: float  # multiplies the palm's width
    thickness: float  # multiplies finger and forearm radii


# Real skin tones from very light to very dark (sRGB); a subject picks a point along this ramp.
SKIN_RAMP = np.array(
    [(250, 222, 200), (238, 196, 168), (226, 176, 140), (200, 144, 106), (170, 112, 78),
     (130, 84, 58), (96, 62, 44), (72, 48, 36)],
    dtype=np.float64,
) / 255.0  # fmt: skip
SLEEVE_COLOURS = np.array(
    [(30, 30, 35), (200, 200, 205), (40, 60, 120), (120, 30, 40), (60, 90, 60), (150, 120, 90),
     (230, 230, 225), (90, 90, 100), (20, 40, 70), (170, 60, 40)],
    dtype=np.float64,
) / 255.0  # fmt: skip


def make_subject_styles(rng: np.random.Generator, num_subjects: int) -> list[SubjectStyle]:
    """One style per person, named s01, s02, ...; skin tones spread over the whole ramp."""
    # Stratified tones, so even a handful of subjects covers light to dark skin.
    tones = (np.arange(num_subjects) + rng.uniform(0, 1, num_subjects)) / num_subjects
    tones = rng.permutation(tones)
    styles = []
    for index, tone in enumerate(tones):
        position = tone * (len(SKIN_RAMP) - 1)
        low = int(np.floor(position))
        high = min(low + 1, len(SKIN_RAMP) - 1)
        skin = SKIN_RAMP[low] + (SKIN_RAMP[high] - SKIN_RAMP[low]) * (position - low)
        skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0.0, 1.0)
        palm_target = np.array([0.93, 0.72, 0.64])
        palm = skin + (palm_target - skin) * (0.15 + 0.35 * tone)
        nail = np.clip(0.55 * palm + 0.45 * np.array([0.95, 0.85, 0.82]), 0.0, 1.0)
        sleeve = np.clip(
            SLEEVE_COLOURS[rng.integers(len(SLEEVE_COLOURS))] * rng.uniform(0.8, 1.2, 3), 0, 1
        )
        styles.append(
            SubjectStyle(
                name=f"s{index + 1:02d}",
                skin_rgb=tuple(float(v) for v in skin),
                palm_rgb=tuple(float(v) for v in palm),
                nail_rgb=tuple(float(v) for v in nail),
                sleeve_rgb=tuple(float(v) for v in sleeve),
                bare_arm=bool(rng.random() < 0.35),
                finger_length=float(rng.uniform(0.92, 1.08)),
                palm_width=float(rng.uniform(0.93, 1.07)),
                thickness=float(rng.uniform(0.9, 1.1)),
            )
        )
    return styles
