"""Token buckets: per-principal request limits and per-IP limits on the token endpoint.

In the memory of one gateway process: with several gateway replicas each
enforces its share (a shared store would be needed for exact global limits).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from ght_gateway.settings import RateLimit


@dataclass(frozen=True)
class Decision:
    """The outcome of taking one token, with what the ``RateLimit-*`` headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    """Seconds until the bucket is full again."""
    retry_after_s: int
    """Seconds until one token is available (0 when allowed)."""

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key; the least recently used keys are forgotten past ``max_keys``."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, limit: RateLimit, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(limit.burst), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(limit.burst), bucket.tokens + elapsed * limit.rate)
            bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        missing = limit.burst - bucket.tokens
        return Decision(
            allowed=allowed,
            limit=limit.burst,
            remaining=int(bucket.tokens),
            reset_s=math.ceil(missing / limit.rate),
            retry_after_s=0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / limit.rate)),
        )
