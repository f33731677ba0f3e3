"""`dvc plots show` as a person sees it, without the internet: the page rendered by a real headless
Chromium that can reach nothing (every request goes to a dead proxy), a screenshot saved and the
charts that drew counted.

    python benchmarks/plots_offline.py                 # this repo, after `dvc repro`
    python benchmarks/plots_offline.py --repo /path/to/repo --browser /usr/bin/chromium

Chromium comes from the system packages (Debian: `apt-get install chromium`). The page is made
twice: with the project's template (.dvc/config: plots/offline.html, Vega inlined) and with DVC's
own (which loads Vega from a CDN), so the difference is in the numbers.
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, RESULTS, finish, machine

NAME = "plots_offline"
# The flags the workplace's probe found Chromium needs here, and a proxy that goes nowhere.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--virtual-time-budget=15000", "--window-size=1400,4200",
]  # fmt: skip


def find_browser(given: str | None) -> str | None:
    for candidate in (given, "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def render(repo: Path, browser: str, out: Path, offline_template: bool) -> dict:
    """Write the plots page (``dvc plots show``) into ``out``, load it in the browser, screenshot
    it and count what drew: Vega charts (an <svg class="marks"> or <canvas> each) and images."""
    command = ["dvc", "plots", "show", "-o", str(out)]
    if not offline_template:  # DVC's built-in page: scripts from cdn.jsdelivr.net
        empty = out.parent / "dvc-default.html"
        from dvc_render.html import PAGE_HTML

        empty.write_text(PAGE_HTML)
        command += ["--html-template", str(empty)]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dvc plots show failed (run `dvc repro` first?):\n{done.stderr}")
    page = out / "index.html"
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, "--user-data-dir=" + str(out / "profile"), "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    shot = out / "screenshot.png"
    subprocess.run(
        [browser, *CHROMIUM_FLAGS, "--user-data-dir=" + str(out / "profile"),
         f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    html = page.read_text()
    return {
        "charts_declared": html.count("vegaEmbed("),
        "charts_drawn": len(re.findall(r'<svg[^>]*class="marks"', dom)) + dom.count("<canvas"),
        "images": len(re.findall(r"<img\b", dom)),
        "overlay_images": len(re.findall(r'<img[^>]*src="[^"]*overlays\.png"', dom)),
        "loads_from_cdn": "cdn.jsdelivr.net" in html,
        "screenshot": str(shot) if shot.is_file() else None,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--browser", default=None)
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    if browser is None:
        raise SystemExit("no Chromium found: install it (Debian: apt-get install chromium)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="lhl-plots-") as tmp:
        for name, offline in (("project template", True), ("DVC's default template", False)):
            found = render(args.repo, browser, Path(tmp) / name.split()[0].strip("'"), offline)
            if found["screenshot"]:
                RESULTS.mkdir(parents=True, exist_ok=True)
                kept = RESULTS / f"plots_offline_{'project' if offline else 'dvc_default'}.png"
                shutil.copyfile(found["screenshot"], kept)
                found["screenshot"] = str(kept.relative_to(REPO))
            results[name] = found
            print(f"{name}: {found}")
    output = {"benchmark": NAME, "browser": browser, "results": results, "machine": machine()}
    finish(NAME, output)
    return output


if __name__ == "__main__":
    main()
