"""What a person reads after a run: the headline numbers in one small metrics file, and a page
template that lets `dvc plots show` draw its charts without the internet.

``headline`` gathers the few numbers that say how good a run is from the stages' reports (the
detail stays in them: metrics/landmarks.json, split.json, evaluate.json, ...), so that
`dvc metrics show` and `dvc exp show` fit a terminal. ``offline_template`` is DVC's page with
Vega, Vega-Lite and Vega-Embed inlined (from the vl-convert-python package, which bundles them)
instead of loaded from a CDN, which air-gapped machines cannot reach.
"""

from __future__ import annotations

import json
from pathlib import Path

# DVC's page (dvc_render's PAGE_HTML) with the libraries inlined and no {scripts} slot, so the
# CDN script tags DVC would add there are left out.
_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <script>
BUNDLE
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""
# The Vega-Lite major version DVC's templates are written for.
VEGA_LITE = "5.21"


def offline_template() -> str:
    """The HTML template for `dvc plots show --html-template` with the JavaScript inlined."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    if "{plot_divs}" in bundle:  # DVC fills the template by replacing these words
        raise ValueError("the Vega bundle contains DVC's {plot_divs} placeholder")
    return _PAGE.replace("BUNDLE", bundle)


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {}


def headline(landmarks: Path, split: Path, evaluate: Path, live: Path, finder: Path) -> dict:
    """The numbers that say how good a run is, flat, from the stages' reports."""
    labelled, kept, evaluation = _read(landmarks), _read(split), _read(evaluate)
    training, finding = _read(live), _read(finder)
    test = evaluation.get("test", {})
    vs_teacher = test.get("student_vs_teacher", {})
    presence = test.get("presence", {})
    # Short keys, values to 4 significant places: `dvc metrics show` prints a column each.
    summary = {
        "detected": labelled.get("detection_rate"),
        "kept": kept.get("kept"),
        "mpjpe_px": vs_teacher.get("mpjpe_px"),
        "mpjpe_hand": vs_teacher.get("mpjpe_norm_hand"),
        "pck_05": vs_teacher.get("pck_05"),
        "pck_10": vs_teacher.get("pck_10"),
        "auc": vs_teacher.get("auc"),
        "oracle_pck_10": test.get("oracle_crop", {}).get("pck_10"),
        "hand_recall": presence.get("presence_recall"),
        "no_hand_agree": presence.get("no_hand_agreement"),
        "train_img_s": training.get("train", {}).get("images_per_second"),
    }
    # with several data sets, each one's end-to-end PCK@0.1 as well
    for name, metrics in test.get("per_dataset", {}).items():
        summary[f"pck_10_{name}"] = metrics.get("student_vs_teacher", {}).get("pck_10")
    del finding  # the finder's own numbers stay in its report
    return {key: _short(value) for key, value in summary.items() if value is not None}


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value
