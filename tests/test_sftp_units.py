"""The pure parts of the SFTP server: client paths, names, bans, login admission,
password hashes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time

import pytest
from asyncssh import SFTPError, SFTPInvalidFilename, SFTPPermissionDenied
from hypothesis import given
from hypothesis import strategies as st
from test_sftp_support import FakeClock

from rosterdrop.passwords import hash_password, verify_password
from rosterdrop.sftp.admission import AddressCounts, PasswordChecks, RecentLogins, Refused
from rosterdrop.sftp.bans import BanList
from rosterdrop.sftp.vpath import Area, VPath, is_temporary, is_uploadable, is_zip, resolve


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"", VPath(Area.ROOT)),
        (b".", VPath(Area.ROOT)),
        (b"dropbox", VPath(Area.DROPBOX)),
        (b"dropbox/x.zip", VPath(Area.DROPBOX, ("x.zip",))),
        (b"./dropbox/x.zip", VPath(Area.DROPBOX, ("x.zip",))),
        (b"reports/run", VPath(Area.REPORTS, ("run",))),
        (b"x.zip", VPath(Area.DROPBOX, ("x.zip",))),
        (b"./x.zip", VPath(Area.DROPBOX, ("x.zip",))),
        (b"/", VPath(Area.ROOT)),
        (b"//dropbox//x.zip", VPath(Area.DROPBOX, ("x.zip",))),
        (b"/x.zip", VPath(Area.DROPBOX, ("x.zip",))),
        (b"/reports", VPath(Area.REPORTS)),
        (b"/reports/run/report.html", VPath(Area.REPORTS, ("run", "report.html"))),
        (b"/etc/passwd", VPath(Area.DROPBOX, ("etc", "passwd"))),
        ("/dropbox/élève.zip".encode(), VPath(Area.DROPBOX, ("élève.zip",))),
    ],
)
def test_resolve_maps_client_paths_into_the_tree(path: bytes, expected: VPath) -> None:
    """Relative paths start in the login folder ``/``; names directly under / are uploads;
    host paths like /etc/passwd become names that do not exist."""
    assert resolve(path) == expected


@pytest.mark.parametrize(
    "path", [b"..", b"../x.zip", b"/dropbox/../x.zip", b"/reports/../../etc", b"a/../b.zip"]
)
def test_resolve_refuses_parent_references(path: bytes) -> None:
    """``..`` is refused outside REALPATH."""
    with pytest.raises(SFTPPermissionDenied, match=r"'\.\.' is not allowed"):
        resolve(path)


def test_realpath_may_go_up_to_the_root_only() -> None:
    """REALPATH lets clients navigate with ``..`` but never above ``/``."""
    assert resolve(b"dropbox/..", for_realpath=True) == VPath(Area.ROOT)
    assert resolve(b"/reports/run/..", for_realpath=True).display == "/reports"
    with pytest.raises(SFTPPermissionDenied):
        resolve(b"/..", for_realpath=True)
    with pytest.raises(SFTPPermissionDenied):
        resolve(b"..", for_realpath=True)


@pytest.mark.parametrize("path", [b"\xff.zip", b"a\x00b.zip", b"a\nb.zip", b"x" * 256])
def test_resolve_refuses_bad_names(path: bytes) -> None:
    """Names must be UTF-8, without control characters, at most 255 bytes."""
    with pytest.raises(SFTPInvalidFilename):
        resolve(path)


@given(st.binary(max_size=300))
def test_resolve_never_leaves_the_tree(path: bytes) -> None:
    """Whatever the bytes, a path resolves inside the tree or is refused with an
    SFTP error; it never contains ``..`` or an empty name."""
    for realpath in (False, True):
        try:
            vpath = resolve(path, for_realpath=realpath)
        except SFTPError:
            continue
        assert all(name not in ("", ".", "..") and "/" not in name for name in vpath.parts)
        assert vpath.display.startswith("/")


@pytest.mark.parametrize(
    ("name", "zip_", "temporary"),
    [
        ("roster.zip", True, False),
        ("ROSTER.ZIP", True, False),
        ("x.zip.filepart", False, True),
        ("x.zip.part", False, True),
        ("x.zip.a1b2c3.partial", False, True),
        ("upload.tmp", False, True),
        (".x.zip", False, True),
        (".zip", False, True),
        ("notes.csv", False, False),
        ("zip", False, False),
    ],
)
def test_name_classes(name: str, zip_: bool, temporary: bool) -> None:
    """ZIPs complete an upload; temporary names are stored and never queued."""
    assert is_zip(name) is zip_
    assert is_temporary(name) is temporary
    assert is_uploadable(name) is (zip_ or temporary)


def test_the_failures_th_failure_within_the_window_starts_the_ban() -> None:
    """With ``failures = 10``: nine failures within the window are not a ban, the
    tenth starts one that ends after ``duration``; failures that have left the
    window are forgotten, and the count restarts after a ban."""
    clock = FakeClock()
    bans = BanList(failures=10, window_seconds=60, duration_seconds=30, clock=clock)
    assert not bans.record_failure("10.0.0.1")
    clock.advance(61)  # that one has left the window
    for n in range(9):
        assert not bans.record_failure("10.0.0.1"), f"failure {n + 1} banned"
    assert bans.recent_failures("10.0.0.1") == 9
    assert not bans.is_banned("10.0.0.1")
    assert bans.record_failure("10.0.0.1"), "the 10th failure did not ban"
    assert bans.is_banned("10.0.0.1") and not bans.is_banned("10.0.0.2")
    assert bans.banned_for("10.0.0.1") == 30
    assert bans.recent_failures("10.0.0.1") == 0
    clock.advance(30)
    assert not bans.is_banned("10.0.0.1")
    assert not bans.record_failure("10.0.0.1"), "the count restarts after a ban"
    assert bans.recent_failures("10.0.0.1") == 1
    clock.advance(60)
    assert bans.recent_failures("10.0.0.1") == 0


def test_one_failure_bans_with_failures_1() -> None:
    bans = BanList(failures=1, window_seconds=60, duration_seconds=30, clock=FakeClock())
    assert bans.limit == 1
    assert bans.record_failure("10.0.0.1") and bans.is_banned("10.0.0.1")


def test_ban_list_memory_is_bounded() -> None:
    """Scans from many addresses do not grow the failure table without bound."""
    bans = BanList(failures=5, window_seconds=60, duration_seconds=30, clock=FakeClock(),
                   max_tracked=100)
    for n in range(1000):
        bans.record_failure(f"10.0.{n // 256}.{n % 256}")
    assert len(bans._failures) == 100


def test_unauthenticated_connections_per_address() -> None:
    """At most ``limit`` per address; leaving frees a place; other addresses apart."""
    counts = AddressCounts(2)
    assert counts.enter("a") and counts.enter("a")
    assert not counts.enter("a"), "a third connection from one address"
    assert counts.enter("b")
    counts.leave("a")
    assert counts.count("a") == 1 and counts.enter("a")
    for _ in range(2):
        counts.leave("a")
    counts.leave("b")
    assert counts.count("a") == counts.count("b") == 0 and not counts._counts


def test_recent_logins_hold_only_successes_for_their_hash_and_ttl() -> None:
    """A remembered success matches the same username, password and stored hash
    within the TTL, and nothing else: not a wrong password, another user, a
    changed hash, or an unknown user (no hash). Its size is bounded."""
    clock = FakeClock()
    cache = RecentLogins(60, clock, size=3)
    cache.add("acme", "right", "$argon2id$hash1")
    assert cache.hit("acme", "right", "$argon2id$hash1")
    assert not cache.hit("acme", "wrong", "$argon2id$hash1")
    assert not cache.hit("other", "right", "$argon2id$hash1")
    assert not cache.hit("acme", "right", "$argon2id$hash2"), "a changed hash matched"
    assert not cache.hit("acme", "righ", "t$argon2id$hash1"), "fields run together"
    cache.add("nobody", "x", "")
    assert not cache.hit("nobody", "x", "")
    clock.advance(60)
    assert not cache.hit("acme", "right", "$argon2id$hash1"), "an expired entry matched"
    assert len(cache) == 0
    for n in range(5):
        cache.add(f"u{n}", "p", "h")
    assert len(cache) == 3 and not cache.hit("u0", "p", "h") and cache.hit("u4", "p", "h")
    off = RecentLogins(0, clock)
    off.add("acme", "right", "h")
    assert not off.hit("acme", "right", "h") and len(off) == 0


def test_recent_logins_keep_no_password() -> None:
    """Entries are keyed HMACs under a per-process key: the password is not in
    memory, and another process (key) does not recognise them."""
    clock = FakeClock()
    cache = RecentLogins(60, clock)
    cache.add("acme", "correct horse", "h")
    assert len(cache._entries) == 1 and cache.hit("acme", "correct horse", "h")
    assert all(b"correct horse" not in digest for digest in cache._entries)
    other = RecentLogins(60, clock)
    assert cache._key != other._key
    other._entries.update(cache._entries)  # the same entries under another key
    assert not other.hit("acme", "correct horse", "h")


class _Gate:
    """A ``PasswordChecks`` with a verify the test releases (``go``).

    The checks run on the test's event loop (pytest-asyncio) and hash in its default
    executor; leaving the ``with`` block releases any verify still waiting, so a
    failed test does not leave threads behind for the loop's teardown to wait on.
    """

    def __init__(self, slots: int = 2, *, failures: int = 10, per_address: int = 1,
                 cache: bool = False) -> None:
        self.clock = FakeClock()
        self.bans = BanList(failures, 60, 30, self.clock)
        self.cache = RecentLogins(60, self.clock) if cache else None
        self.lock = threading.Lock()
        self.hashing = 0
        self.most = 0
        self.hashed: list[str] = []
        self.go = threading.Event()
        self.checks = PasswordChecks(slots, verify=self.verify, dummy_hash="dummy",
                                     bans=self.bans, cache=self.cache,
                                     per_address=per_address)

    def __enter__(self) -> _Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.go.set()

    def verify(self, hash: str, password: str) -> bool:
        with self.lock:
            self.hashing += 1
            self.most = max(self.most, self.hashing)
            self.hashed.append(password)
        try:
            assert self.go.wait(10)
            return hash == "stored" and password == "right"
        finally:
            with self.lock:
                self.hashing -= 1

    async def check(self, address: str, password: str, stored: str = "stored") -> bool:
        def outcome(ok: bool) -> None:
            if not ok:
                self.bans.record_failure(address)

        return await self.checks.check(address, "user", password, stored, outcome)


async def _settle(gate: _Gate, hashing: int, timeout: float = 5.0) -> None:
    """Wait until ``hashing`` checks are inside verify."""
    deadline = time.monotonic() + timeout
    while gate.hashing != hashing:
        if time.monotonic() > deadline:
            raise AssertionError(f"{gate.hashing} checks hashing, expected {hashing}")
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_password_checks_are_bounded_and_one_per_address() -> None:
    """Six checks from one address and one from another, two slots: one address
    hashes one at a time, and the other address gets the second slot at once."""
    with _Gate(slots=2) as gate:
        attack = [asyncio.ensure_future(gate.check("10.0.0.1", "wrong")) for _ in range(6)]
        await _settle(gate, 1)
        assert gate.checks.waiting() == 5
        honest = asyncio.ensure_future(gate.check("10.0.0.2", "right"))
        await _settle(gate, 2)
        assert gate.checks.running("10.0.0.1") == 1
        assert gate.checks.running("10.0.0.2") == 1
        gate.go.set()
        assert await honest
        results = await asyncio.gather(*attack)
        assert results == [False] * 6
        assert gate.most == 2 and gate.checks.most_running == 2
        assert gate.bans.recent_failures("10.0.0.1") == 6
        assert gate.checks.running() == 0 and gate.checks.waiting() == 0


@pytest.mark.asyncio
async def test_addresses_take_turns_for_the_slots() -> None:
    """With one slot, waiting addresses are served in turn: a second address's
    check runs after the first address's current one, not after all of them."""
    order: list[str] = []
    with _Gate(slots=1) as gate:
        async def one(address: str) -> None:
            await gate.check(address, "wrong")
            order.append(address)

        tasks = [asyncio.ensure_future(one("a")) for _ in range(3)]
        await _settle(gate, 1)
        tasks.append(asyncio.ensure_future(one("b")))
        await asyncio.sleep(0.05)
        gate.go.set()
        await asyncio.gather(*tasks)
    assert order == ["a", "b", "a", "a"]


@pytest.mark.asyncio
async def test_a_check_is_refused_before_hashing_once_failures_reach_the_ban() -> None:
    """With ``failures = 3``, twenty wrong passwords from one address hash three
    times: the third failure bans, and the waiting checks are refused unhashed."""
    with _Gate(slots=2, failures=3) as gate:
        gate.go.set()
        tasks = [asyncio.ensure_future(gate.check("10.0.0.1", "wrong")) for _ in range(20)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[:3] == [False] * 3
        assert all(isinstance(r, Refused) for r in results[3:])
        assert len(gate.hashed) == 3 and gate.bans.is_banned("10.0.0.1")
        with pytest.raises(Refused):
            await gate.check("10.0.0.1", "right")
        assert len(gate.hashed) == 3


@pytest.mark.asyncio
async def test_failures_in_flight_count_towards_the_ban() -> None:
    """With two checks per address allowed and ``failures = 3``: two failures
    recorded and one check in flight leave no room for another check; it waits
    for the one in flight and is refused when that one bans."""
    with _Gate(slots=4, failures=3, per_address=2) as gate:
        for _ in range(2):
            gate.bans.record_failure("10.0.0.1")
        first = asyncio.ensure_future(gate.check("10.0.0.1", "wrong"))
        await _settle(gate, 1)
        second = asyncio.ensure_future(gate.check("10.0.0.1", "wrong"))
        await asyncio.sleep(0.05)
        assert gate.hashing == 1 and gate.checks.waiting() == 1
        gate.go.set()
        assert await first is False
        with pytest.raises(Refused):
            await second
        assert len(gate.hashed) == 1


@pytest.mark.asyncio
async def test_a_waiting_check_starts_when_the_one_in_flight_succeeds() -> None:
    """Two failures recorded (ban at 3), a right password in flight: the next
    check from that address waits, then runs once the success is known."""
    with _Gate(slots=4, failures=3, per_address=2) as gate:
        for _ in range(2):
            gate.bans.record_failure("10.0.0.1")
        first = asyncio.ensure_future(gate.check("10.0.0.1", "right"))
        await _settle(gate, 1)
        second = asyncio.ensure_future(gate.check("10.0.0.1", "right"))
        await asyncio.sleep(0.05)
        assert gate.checks.waiting() == 1
        gate.go.set()
        assert await first and await second
        assert len(gate.hashed) == 2


@pytest.mark.asyncio
async def test_a_cancelled_check_keeps_its_slot_until_its_hash_is_done() -> None:
    """The asker of a check can go (the client sent another request, or left);
    its thread cannot be stopped, so its slot stays taken until the hash is done,
    and its failure still counts. A cancelled waiter leaves the queue."""
    with _Gate(slots=1) as gate:
        first = asyncio.ensure_future(gate.check("a", "wrong"))
        await _settle(gate, 1)
        waiting = asyncio.ensure_future(gate.check("b", "wrong"))
        await asyncio.sleep(0.01)
        first.cancel()
        waiting.cancel()
        await asyncio.gather(first, waiting, return_exceptions=True)
        assert gate.checks.waiting() == 0
        assert gate.checks.running() == 1, "the slot was freed while hashing"
        (job,) = gate.checks.in_flight()
        gate.go.set()
        assert await job is False
        assert gate.checks.running() == 0
        assert gate.bans.recent_failures("a") == 1
        assert gate.hashed == ["wrong"]


@pytest.mark.asyncio
async def test_recent_success_skips_the_hash_and_the_queue() -> None:
    """Ten logins with the right password at once: one hash; a wrong password
    after that is still hashed."""
    with _Gate(slots=2, cache=True) as gate:
        gate.go.set()
        assert await asyncio.gather(*(gate.check("a", "right") for _ in range(10))) \
            == [True] * 10
        assert gate.hashed == ["right"]
        assert await gate.check("a", "right")
        assert not await gate.check("a", "wrong")
        assert not await gate.check("a", "wrong")
        assert gate.hashed == ["right", "wrong", "wrong"], "a wrong password skipped the hash"
        assert not await gate.check("a", "right", stored="changed"), \
            "a changed hash matched a remembered success"
        assert gate.hashed[-1] == "right"


@pytest.mark.asyncio
async def test_unknown_users_are_checked_against_the_dummy_hash() -> None:
    """No stored hash: the dummy is hashed (same cost) and it never succeeds."""
    with _Gate(cache=True) as gate:
        gate.go.set()
        assert not await gate.check("a", "right", stored="")
        assert gate.hashed == ["right"] and gate.bans.recent_failures("a") == 1


def test_argon2_hash_round_trip() -> None:
    """``hash_password`` makes an argon2id PHC string that verifies."""
    hashed = hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "s3cret")
    assert not verify_password(hashed, "S3cret")


def _scrypt(password: str, salt: bytes, ln: int = 10, alphabet: str = "std") -> str:
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**ln, r=8, p=1, dklen=32)

    def b64(data: bytes) -> str:
        text = base64.b64encode(data).decode().rstrip("=")
        return text.replace("+", ".") if alphabet == "passlib" else text

    return f"$scrypt$ln={ln},r=8,p=1${b64(salt)}${b64(digest)}"


@pytest.mark.parametrize("alphabet", ["std", "passlib"])
def test_scrypt_hashes_verify(alphabet: str) -> None:
    """``$scrypt$ln=…,r=…,p=…$salt$hash`` (standard or passlib base64) verifies."""
    hashed = _scrypt("pässword", b"\xfb" * 16, alphabet=alphabet)
    assert verify_password(hashed, "pässword")
    assert not verify_password(hashed, "password")


@pytest.mark.parametrize(
    "hashed",
    [
        "", "plain text", "$argon2id$", "$argon2id$v=19$m=1,t=1,p=1$$",
        "$scrypt$ln=99,r=8,p=1$c2FsdA$aGFzaA", "$scrypt$ln=10,r=8,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
        "$scrypt$ln=10,r=8,p=1$c2FsdA$c2hvcnQ", "$2b$12$bcryptisnotsupported",
    ],
)
def test_malformed_hashes_do_not_match(hashed: str) -> None:
    """Unknown or malformed hashes never match and never raise."""
    assert not verify_password(hashed, "anything")


@given(st.text(max_size=200), st.text(max_size=50))
def test_verify_password_never_raises(hashed: str, plain: str) -> None:
    """``verify_password`` returns False for arbitrary text instead of raising."""
    assume_prefixes = ("$argon2", "$scrypt$")
    result = verify_password(hashed, plain)
    assert result is False or hashed.startswith(assume_prefixes)
