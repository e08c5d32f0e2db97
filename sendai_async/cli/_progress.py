"""A live progress line on stderr: tqdm when the ``cli`` extra is installed, plain otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any


class Progress:
    """Show done, failed, rate and ETA while a bulk fetch runs."""

    def __init__(self, total: int | None, *, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._bar: Any = None
        self._last_plain = 0.0
        self._enabled = enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm  # noqa: PLC0415 -- optional, from the cli extra
        except ImportError:
            return
        self._bar = tqdm(
            total=total,
            unit="task",
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
            mininterval=0.2,
        )

    def update(self, done: int, failed: int) -> None:
        """Record the new totals and redraw (throttled)."""
        delta = (done + failed) - (self.done + self.failed)
        self.done, self.failed = done, failed
        if self._bar is not None:
            self._bar.set_postfix(failed=failed, refresh=False)
            self._bar.update(delta)
        elif self._enabled:
            now = time.monotonic()
            if now - self._last_plain >= 1.0:
                self._last_plain = now
                of = f"/{self.total}" if self.total is not None else ""
                print(f"  {done + failed}{of} ({failed} failed)", file=sys.stderr, flush=True)

    def discount(self) -> None:
        """Take one line off the total: it was skipped (a repeat, or fetched before)."""
        if self.total is None:
            return
        self.total -= 1
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
