"""Rate limits through the `limits` library: in memory by default, Redis by URL."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse, storage, strategies

from server.errors import AppError

log = logging.getLogger(__name__)


class RateLimited(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(
            message,
            headers={"Retry-After": str(max(1, retry_after))},
            details={"retry_after": max(1, retry_after)},
        )


class LimitStoreUnavailable(AppError):
    """The shared store (Redis) does not answer. Refusing is safer than not counting:
    sign-in limits stop password guessing, and quotas are what plans sell."""

    status = 503
    code = "rate_limit_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "the rate-limit store (RODEOAI_RATE_LIMIT_STORAGE) does not answer; try again shortly",
            headers={"Retry-After": "5"},
        )


class RateLimiter:
    def __init__(self, storage_url: str) -> None:
        self._storage = storage.storage_from_string(storage_url)
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)

    def reachable(self) -> bool:
        try:
            return bool(self._storage.check())
        except Exception:
            return False

    def _retry_after(self, item: RateLimitItem, *keys: str) -> int:
        reset, _ = self._limiter.get_window_stats(item, *keys)
        return math.ceil(reset - time.time())

    def hit(self, limit: str, *keys: str, what: str) -> None:
        """Count one event; raise 429 when the limit is spent."""
        self._count(self._limiter.hit, limit, keys, what)

    def check(self, limit: str, *keys: str, what: str) -> None:
        """Raise 429 if the limit is already spent, without counting this event."""
        self._count(self._limiter.test, limit, keys, what)

    def _count(
        self, step: Callable[..., bool], limit: str, keys: tuple[str, ...], what: str
    ) -> None:
        item = parse(limit)
        try:
            allowed = step(item, *keys)
            retry_after = 0 if allowed else self._retry_after(item, *keys)
        except Exception as exc:  # Redis down or unreachable: a clear 503, logged once here
            log.warning("rate-limit store failed: %s", type(exc).__name__)
            raise LimitStoreUnavailable from exc
        if not allowed:
            raise RateLimited(f"too many {what}; try again later", retry_after=retry_after)

    def clear(self, limit: str, *keys: str) -> None:
        self._limiter.clear(parse(limit), *keys)
