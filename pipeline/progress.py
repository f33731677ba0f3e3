"""Progress of a long step: a tqdm bar on a terminal, a plain line now and then elsewhere (a log
file or CI, where a bar's carriage returns pile up), nothing when switched off."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class PlainProgress:
    """tqdm's update/close for a log: "teacher: 250/1000 img (25%)" at most every ``every_s``."""

    def __init__(self, total: int | None, desc: str, unit: str, every_s: float = 10.0):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done, self.last = 0, time.monotonic()

    def update(self, count: int = 1) -> None:
        self.done += count
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self._say()

    def _say(self) -> None:
        of = f"/{self.total}" if self.total else ""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        print(f"{self.desc}: {self.done}{of} {self.unit}{share}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress(total: int | None, desc: str, unit: str, enabled: bool = True):
    """A bar on a terminal, plain lines otherwise; ``enabled`` false: silent."""
    if enabled and sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, mininterval=1.0)
    if enabled:
        return PlainProgress(total, desc, unit)
    return tqdm(total=total, disable=True)
