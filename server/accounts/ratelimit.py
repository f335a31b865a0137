"""Rate limits through the `limits` library: in memory by default, Redis by URL."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse, storage, strategies

from server.errors import AppError


class RateLimited(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(
            message,
            headers={"Retry-After": str(max(1, retry_after))},
            details={"retry_after": max(1, retry_after)},
        )


class RateLimiter:
    def __init__(self, storage_url: str) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_url))

    def _retry_after(self, item: RateLimitItem, *keys: str) -> int:
        reset, _ = self._limiter.get_window_stats(item, *keys)
        return math.ceil(reset - time.time())

    def hit(self, limit: str, *keys: str, what: str) -> None:
        """Count one event; raise 429 when the limit is spent."""
        item = parse(limit)
        if not self._limiter.hit(item, *keys):
            raise RateLimited(
                f"too many {what}; try again later", retry_after=self._retry_after(item, *keys)
            )

    def check(self, limit: str, *keys: str, what: str) -> None:
        """Raise 429 if the limit is already spent, without counting this event."""
        item = parse(limit)
        if not self._limiter.test(item, *keys):
            raise RateLimited(
                f"too many {what}; try again later", retry_after=self._retry_after(item, *keys)
            )

    def clear(self, limit: str, *keys: str) -> None:
        self._limiter.clear(parse(limit), *keys)
