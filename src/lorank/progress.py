"""Progress of long work where no terminal shows a bar (a log file, nohup, CI, a study step's log): plain lines."""
from __future__ import annotations

from typing import Any

__all__ = ["ProgressLines"]


class ProgressLines:
    """``tick(n)`` (which also calls ``tick``, e.g. a rich bar's advance) that prints a plain progress line (done,
    rate, time left) at most every ``every_s`` seconds to ``out`` (stderr by default). The CLI uses it where stderr
    is not a terminal, since a rich bar shows nothing there until it ends."""

    def __init__(self, label: str, total: int | None, tick: Any = None, every_s: float = 30.0,
                 out: Any = None, clock: Any = None) -> None:
        import sys
        import time

        self.label, self.total, self.tick, self.every_s = label, total, tick, every_s
        self.out = out if out is not None else sys.stderr
        self.clock = clock or time.monotonic
        self.t0 = self.last = self.clock()
        self.done = 0
        self.resumed_at = 0  # work a resumed job had done before (counted as done, not in the rate)

    def resumed(self, n: int) -> None:
        """`n` done before this process started (a resumed sweep's saved chunks): counted towards the total, left
        out of the rate and so of the time left (it was counted in, and a resumed sweep showed 8/s for 1/s)."""
        if self.tick is not None:
            self.tick(n)
        self.done += n
        self.resumed_at += n
        print(f"{self.label}: resumed at {self.done}" + (f"/{self.total}" if self.total else ""), file=self.out,
              flush=True)

    def __call__(self, n: int) -> None:
        if self.tick is not None:
            self.tick(n)
        self.done += n
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = (self.done - self.resumed_at) / max(now - self.t0, 1e-9)
        of = f"/{self.total}" if self.total else ""
        left = (f", ~{(self.total - self.done) / rate / 60:.0f} min left" if self.total and rate > 0 else "")
        print(f"{self.label}: {self.done}{of} ({rate:.2f}/s, {(now - self.t0) / 60:.1f} min{left})",
              file=self.out, flush=True)
