"""Per-tenant limits of the API process: a request rate and predicts at once.

:class:`TokenBuckets`: a token bucket per API key (``DOVECOTE_TENANT_RATE_LIMIT`` requests
per second). Each key's bucket holds at most ``burst`` tokens and refills at ``rate`` tokens
per second; a request takes one token, or is refused with the seconds until one is back
(``ceil((1 - tokens) / rate)``, sent as ``Retry-After``).

:class:`InFlight`: at most ``limit`` requests of one tenant at once
(``DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS``). A rate does not bound what is in flight: a
predict of 64 photos takes seconds, so a tenant within any sensible rate could hold every
thread of the API's pool, and every other tenant's request would wait for one.

Both live in the API process: with N API processes behind a balancer a key may send up to N
times the rate, and a tenant hold N times the predicts.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict


class TokenBuckets:
    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, max(1, burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> int | None:
        """Take a token for ``key``; None when granted, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            granted = tokens >= 1.0
            if granted:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:  # forget the longest-idle key (full by now)
                self._buckets.popitem(last=False)
        return None if granted else max(1, math.ceil((1.0 - tokens) / self.rate))


class InFlight:
    """Counts of requests in progress by key, each at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def enter(self, key: str) -> bool:
        """Count one more request of ``key``; False (and nothing counted) at the limit."""
        with self._lock:
            if self._counts[key] >= self.limit:
                return False
            self._counts[key] += 1
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            self._counts[key] -= 1
            if not self._counts[key]:
                del self._counts[key]  # idle keys take no memory
