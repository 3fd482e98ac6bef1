"""Limits on logins that have not authenticated yet (no sockets, no asyncssh).

- ``AddressCounts``: connections per client address that have not logged in
  yet, at most ``limit`` at a time; the server drops the one over the limit.
- ``PasswordChecks``: password hashes (argon2 is slow and takes 64 MiB on
  purpose) are checked in worker threads, at most ``slots`` at a time in the
  whole process and at most ``per_address`` at a time per address. Requests
  that must wait are served address by address in turn, so one address
  cannot hold every slot: a login from elsewhere waits for at most one check
  per busy address. A slot is held until its hash has finished, even when
  the connection that asked has gone (a thread cannot be stopped).
  Failed checks count towards the ban (``bans``, a ``BanList``): a check of
  a banned address is refused with ``Refused`` without hashing, and so is
  every check of that address still waiting when its ban starts; a check
  whose address's recorded failures plus checks in flight would reach the
  ban waits for those in flight (they decide: a ban, or room for it). Each
  outcome is reported through the caller's ``on_outcome`` before the slot is
  free again, so the next check of the address already sees a failure the
  previous one recorded: with one check per address, an address is hashed
  exactly ``ban.failures`` times before the ban.
- ``RecentLogins``: successful checks of the last ``ttl`` seconds, so a SIS
  that logs in again and again with the right password does not pay argon2
  each time. Entries are an HMAC of username, password and stored hash under
  a random per-process key (no password is kept); only successes are stored,
  so a wrong password always goes to the hash, and a changed hash never
  matches an old entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Protocol


class Refused(Exception):
    """The check was not run: the address is banned or about to be."""


class AddressCounts:
    """Open unauthenticated connections per address, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()

    def enter(self, address: str) -> bool:
        """Count one more connection; False (and not counted) when over the limit."""
        if self._counts[address] >= self.limit:
            return False
        self._counts[address] += 1
        return True

    def leave(self, address: str) -> None:
        self._counts[address] -= 1
        if self._counts[address] <= 0:
            del self._counts[address]

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)


class RecentLogins:
    """Successful password checks of the last ``ttl`` seconds (at most ``size``)."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float],
        *,
        size: int = 256,
        key: bytes | None = None,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._size = size
        self._key = key if key is not None else secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def _digest(self, username: str, password: str, stored: str) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (username, password, stored):
            data = part.encode("utf-8", "surrogatepass")
            mac.update(len(data).to_bytes(8, "big"))
            mac.update(data)
        return mac.digest()

    def hit(self, username: str, password: str, stored: str) -> bool:
        """True when this password matched this stored hash within ``ttl``."""
        if self._ttl <= 0 or not stored:
            return False
        digest = self._digest(username, password, stored)
        expires = self._entries.get(digest)
        if expires is None:
            return False
        if self._clock() >= expires:
            del self._entries[digest]
            return False
        return True

    def add(self, username: str, password: str, stored: str) -> None:
        """Remember a successful check (the entry lives ``ttl`` seconds from now)."""
        if self._ttl <= 0 or not stored:
            return
        digest = self._digest(username, password, stored)
        self._entries.pop(digest, None)
        self._entries[digest] = self._clock() + self._ttl
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Bans(Protocol):
    """What ``PasswordChecks`` needs of ``BanList``."""

    @property
    def limit(self) -> int: ...

    def is_banned(self, address: str) -> bool: ...

    def recent_failures(self, address: str) -> int: ...


class PasswordChecks:
    """Password hash checks: bounded, fair across addresses, ban-aware."""

    def __init__(
        self,
        slots: int,
        *,
        verify: Callable[[str, str], bool],
        dummy_hash: str,
        bans: Bans,
        cache: RecentLogins | None = None,
        per_address: int = 1,
    ) -> None:
        """``verify(hash, password)`` runs in a worker thread; ``dummy_hash`` is
        checked instead of an unknown user's (same cost, never a success)."""
        self._free = slots
        self._per_address = per_address
        self._verify = verify
        self._dummy_hash = dummy_hash
        self._bans = bans
        self._cache = cache
        self._running: Counter[str] = Counter()
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._in_flight: set[asyncio.Future[bool]] = set()
        self.most_running = 0
        """The most checks that held a slot at once (for tests and measurements)."""

    def running(self, address: str | None = None) -> int:
        """Checks holding a slot now, of one address or of all."""
        if address is None:
            return sum(self._running.values())
        return self._running.get(address, 0)

    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    def in_flight(self) -> set[asyncio.Future[bool]]:
        """Futures of the checks hashing now (done when their thread has finished)."""
        return set(self._in_flight)

    async def check(
        self,
        address: str,
        username: str,
        password: str,
        stored: str,
        on_outcome: Callable[[bool], None],
    ) -> bool:
        """True when ``password`` matches ``stored`` (empty: unknown user, always
        False after a dummy check); raise ``Refused`` when the check may not run.

        ``on_outcome(ok)`` runs on the event loop as soon as the hash has been
        checked, before the next check of the address may start, even when the
        caller has been cancelled meanwhile: the caller records a failure in
        ``bans`` there. A cache hit is a success with no hash and no call."""
        cache = self._cache
        if cache is not None and cache.hit(username, password, stored):
            return True
        await self._acquire(address)
        if cache is not None and cache.hit(username, password, stored):
            self._release(address)  # a check that finished while this one waited
            return True
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[bool] = loop.create_future()
        try:
            job = loop.run_in_executor(None, self._verify, stored or self._dummy_hash, password)
        except BaseException:
            self._release(address)
            raise
        self._in_flight.add(outcome)
        outcome.add_done_callback(self._in_flight.discard)

        def finished(job: asyncio.Future[bool]) -> None:
            try:
                ok = job.result() and bool(stored)
            except BaseException as exc:  # verify never raises; keep the slot honest if it does
                self._release(address)
                if not outcome.done():  # (a server closing may have cancelled it)
                    outcome.set_exception(exc)
                    outcome.exception()  # retrieved: the asker may have gone
                return
            if ok and cache is not None:
                cache.add(username, password, stored)
            try:
                on_outcome(ok)
            finally:
                self._release(address)
                if not outcome.done():
                    outcome.set_result(ok)

        job.add_done_callback(finished)
        return await asyncio.shield(outcome)

    def _state(self, address: str) -> str:
        """``refuse`` (banned), ``start`` or ``wait`` for a check of ``address``."""
        if self._bans.is_banned(address):
            return _REFUSE
        running = self._running[address]
        failures = self._bans.recent_failures(address)
        if failures >= self._bans.limit:
            return _REFUSE
        if running >= self._per_address or failures + running >= self._bans.limit:
            return _WAIT  # the checks in flight decide: a ban, or room for this one
        return _START

    async def _acquire(self, address: str) -> None:
        if self._state(address) == _REFUSE:
            raise Refused(address)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(address, deque()).append(waiter)
        self._dispatch()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                if waiter.exception() is None:  # granted, but its asker has gone
                    self._release(address)
            else:
                self._forget(address, waiter)
            raise

    def _forget(self, address: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(address)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._waiting[address]

    def _release(self, address: str) -> None:
        self._free += 1
        self._running[address] -= 1
        if self._running[address] <= 0:
            del self._running[address]
        if address in self._waiting:
            self._waiting.move_to_end(address)  # just served: the others go first
        self._dispatch()

    def _dispatch(self) -> None:
        """Refuse the waiters of banned addresses; hand free slots out in turn,
        one address after the other."""
        for address in list(self._waiting):
            if self._state(address) == _REFUSE:
                for waiter in self._waiting.pop(address):
                    if not waiter.done():
                        waiter.set_exception(Refused(address))
        granted = True
        while granted and self._free > 0:
            granted = False
            for address in list(self._waiting):
                if self._free <= 0:
                    return
                if self._state(address) != _START:
                    continue
                queue = self._waiting[address]
                while queue and queue[0].done():  # cancelled, not yet forgotten
                    queue.popleft()
                if queue:
                    self._free -= 1
                    self._running[address] += 1
                    self.most_running = max(self.most_running, sum(self._running.values()))
                    queue.popleft().set_result(None)
                    granted = True
                if queue:
                    self._waiting.move_to_end(address)  # the other addresses go first
                else:
                    del self._waiting[address]


_REFUSE, _START, _WAIT = "refuse", "start", "wait"
