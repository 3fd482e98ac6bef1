"""The pure parts of the SFTP server: client paths, names, bans, password hashes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from asyncssh import SFTPError, SFTPInvalidFilename, SFTPPermissionDenied
from hypothesis import given
from hypothesis import strategies as st
from test_sftp_support import FakeClock

from rosterdrop.passwords import hash_password, verify_password
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
