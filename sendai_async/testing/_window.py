"""A 429 window for the sandbox: the team's rate limit hit for a few seconds.

While the window is open every request gets a 429 whose ``retry-after-ms`` is the time
left (plus a small margin, as real servers round up). It records when the first 429 went
out and when the window ends, on the sandbox's monotonic clock, so a test can check that
no client sent anything in between.
"""

from __future__ import annotations

import time

import attrs

_MARGIN = 0.02


@attrs.define
class RateLimitWindow:
    """Answer 429 to everything for ``seconds``, from the ``after_requests``-th request on.

    Attributes:
        first_429: When the first 429 was sent (``time.monotonic()``), or ``None``.
        end: When the window closes, or ``None`` before it opened.
        limited: How many requests got a 429 from it.

    """

    after_requests: int
    seconds: float
    first_429: float | None = None
    end: float | None = None
    limited: int = 0

    def retry_after(self, request_number: int) -> float | None:
        """Return the wait to send with a 429 for this request, or ``None`` to serve it."""
        now = time.monotonic()
        if self.end is None:
            if request_number < self.after_requests:
                return None
            self.end = now + self.seconds
        if now >= self.end:
            return None
        if self.first_429 is None:
            self.first_429 = now
        self.limited += 1
        return self.end - now + _MARGIN
