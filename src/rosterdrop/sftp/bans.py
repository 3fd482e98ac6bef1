"""Failed-login bans per client address (pure: the clock is passed in).

The ``failures``-th failed login from one address within ``window`` seconds
bans that address for ``duration`` seconds: with ``failures = 10``, nine
failures are forgiven, the tenth starts the ban and the eleventh attempt is
refused before its password is checked. When a ban ends the count starts
again from zero. Memory is bounded: at most ``max_tracked`` addresses are
remembered, the stalest dropped first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable


class BanList:
    def __init__(
        self,
        failures: int,
        window_seconds: float,
        duration_seconds: float,
        clock: Callable[[], float],
        *,
        max_tracked: int = 10_000,
    ) -> None:
        self._limit = failures
        self._window = window_seconds
        self._duration = duration_seconds
        self._clock = clock
        self._max_tracked = max_tracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._banned_until: dict[str, float] = {}

    @property
    def limit(self) -> int:
        """Failures within the window that start a ban."""
        return self._limit

    def is_banned(self, address: str) -> bool:
        until = self._banned_until.get(address)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._banned_until[address]
        return False

    def banned_for(self, address: str) -> float:
        """Seconds left on the address's ban (0 when not banned)."""
        if not self.is_banned(address):
            return 0.0
        return self._banned_until[address] - self._clock()

    def recent_failures(self, address: str) -> int:
        """Failures of the address counted now (within the window, since its last ban)."""
        times = self._failures.get(address)
        if not times:
            return 0
        cutoff = self._clock() - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[address]
        return len(times)

    def record_failure(self, address: str) -> bool:
        """Count one failed login; True when this failure starts a ban."""
        now = self._clock()
        times = self._failures.pop(address, None) or deque()
        times.append(now)
        while times and times[0] <= now - self._window:
            times.popleft()
        if len(times) >= self._limit:
            if len(self._banned_until) >= self._max_tracked:
                self._banned_until = {a: t for a, t in self._banned_until.items() if t > now}
            self._banned_until[address] = now + self._duration
            return True
        self._failures[address] = times
        while len(self._failures) > self._max_tracked:
            self._failures.popitem(last=False)
        return False
