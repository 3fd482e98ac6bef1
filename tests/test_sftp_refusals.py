"""What a session may not do, each refused with a clear SFTP status message."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
import pytest
from test_sftp_support import (
    OTHER_PASSWORD,
    PASSWORD,
    paramiko_sftp,
    paramiko_transport,
    random_bytes,
    running_server,
)


def test_only_zip_and_temporary_names_can_be_uploaded(tmp_path: Path) -> None:
    """Writing or renaming to a name other than ``*.zip`` or a temporary name is
    refused with a message naming the rule; nothing is left behind."""
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            with pytest.raises(PermissionError, match=r"only \.zip files can be uploaded"):
                sftp.open("students.csv", "wb")
            for name in ("a.zip.part", "a.zip.partial", "a.tmp", ".hidden"):
                with sftp.open(name, "wb") as remote:
                    remote.write(b"x")
                sftp.remove(name)
            with sftp.open("ok.zip", "wb") as remote:
                remote.write(b"PK")
            with pytest.raises(PermissionError, match=r"only \.zip files"):
                sftp.rename("ok.zip", "ok.txt")
        assert sorted(os.listdir(srv.dropbox())) == ["ok.zip"]
        assert srv.logs.wait("upload_refused", file="students.csv")["reason"] == "name"


def test_a_file_being_uploaded_cannot_be_opened_removed_or_renamed(tmp_path: Path) -> None:
    """While one session writes x.zip, another cannot overwrite, remove or rename it."""
    with running_server(tmp_path) as srv:
        with (
            paramiko_sftp(srv.port, "acme", password=PASSWORD) as first,
            paramiko_sftp(srv.port, "acme-sis", key=srv.keys["acme-sis"]) as second,
            first.open("x.zip", "wb") as remote,
        ):
            remote.write(b"PK")
            first.stat("x.zip")
            with pytest.raises(PermissionError, match="already being uploaded"):
                second.open("x.zip", "wb")
            with pytest.raises(PermissionError, match="being uploaded"):
                second.remove("x.zip")
            with pytest.raises(PermissionError, match="being uploaded"):
                second.rename("x.zip", "y.zip")
        [upload] = srv.wait_uploads(1)
        assert upload.data == b"PK"


def test_folders_cannot_be_created_or_removed(tmp_path: Path) -> None:
    """mkdir and rmdir are refused."""
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            with pytest.raises(PermissionError, match="folders cannot be created"):
                sftp.mkdir("/dropbox/sub")
            with pytest.raises(PermissionError, match="folders cannot be created"):
                sftp.mkdir("/reports/new")
            with pytest.raises(PermissionError, match="folders cannot be removed"):
                sftp.rmdir("/dropbox")
            with pytest.raises(PermissionError, match="no folders"):
                sftp.open("/dropbox/sub/x.zip", "wb")
        assert os.listdir(srv.dropbox()) == []


def test_reports_are_readable_and_read_only(tmp_path: Path) -> None:
    """/reports can be listed and downloaded; writing, removing or renaming in it
    is refused; uploads in /dropbox cannot be downloaded."""
    with running_server(tmp_path) as srv:
        run = srv.paths.run_reports("acme", "run-1")
        run.mkdir(parents=True)
        (run / "report.html").write_text("<h1>ok</h1>")
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            assert sftp.listdir("/reports") == ["run-1"]
            assert sftp.listdir("/reports/run-1") == ["report.html"]
            with sftp.open("/reports/run-1/report.html", "rb") as remote:
                assert remote.read() == b"<h1>ok</h1>"
            with pytest.raises(PermissionError, match="read-only"):
                sftp.open("/reports/x.zip", "wb")
            with pytest.raises(PermissionError, match="read-only"):
                sftp.remove("/reports/run-1/report.html")
            with pytest.raises(PermissionError, match="read-only"):
                sftp.chmod("/reports/run-1/report.html", 0o777)
            with sftp.open("mine.zip", "wb") as remote:
                remote.write(b"PK")
            with pytest.raises(PermissionError, match="read-only"):
                sftp.rename("mine.zip", "/reports/mine.zip")
            with pytest.raises(PermissionError, match="cannot be downloaded"):
                sftp.open("mine.zip", "rb")
        assert (run / "report.html").read_text() == "<h1>ok</h1>"
        refused = srv.logs.wait("upload_refused", file="/reports/x.zip")
        assert refused["reason"] == "outside_dropbox"


def test_parent_references_are_refused(tmp_path: Path) -> None:
    """``..`` is refused in every request (REALPATH may go up to ``/``, no further)."""
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            for path in ("../x.zip", "/dropbox/../x.zip", "../../other/dropbox/x.zip"):
                with pytest.raises(PermissionError, match=r"'\.\.' is not allowed"):
                    sftp.open(path, "wb")
            with pytest.raises(PermissionError, match=r"'\.\.' is not allowed"):
                sftp.stat("../../../etc/passwd")
            assert sftp.normalize("dropbox/..") == "/"
            with pytest.raises(PermissionError, match="cannot leave your folder"):
                sftp.normalize("/..")
        assert os.listdir(srv.dropbox()) == []
        assert not (srv.paths.tenant("acme") / "x.zip").exists()


def test_host_paths_and_other_tenants_are_unreachable(tmp_path: Path) -> None:
    """Absolute host paths name nothing; another tenant's uploads and reports
    cannot be seen, read or overwritten by any spelling."""
    with running_server(tmp_path) as srv:
        secret = srv.dropbox("other") / "secret.zip"
        secret.write_bytes(b"other tenant")
        srv.paths.reports("other").joinpath("private.html").write_text("private")
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            for path in ("/etc/passwd", str(secret), "/secret.zip", "/dropbox/secret.zip",
                         "/reports/private.html", str(srv.paths.root)):
                with pytest.raises(FileNotFoundError):
                    sftp.stat(path)
            with pytest.raises(PermissionError):
                sftp.open(str(secret), "rb")
            with pytest.raises(PermissionError):
                sftp.open(str(secret), "wb")
            with pytest.raises(FileNotFoundError):
                sftp.open("/reports/private.html", "rb")
            assert "secret.zip" not in sftp.listdir("/") + sftp.listdir("/dropbox")
            assert sftp.listdir("/reports") == []
            with pytest.raises(OSError):
                sftp.listdir("/etc")
        with paramiko_sftp(srv.port, "other", password=OTHER_PASSWORD) as sftp:
            assert sftp.listdir("/dropbox") == ["secret.zip"]
        assert secret.read_bytes() == b"other tenant"


def test_symlinks_are_refused_and_never_followed(tmp_path: Path) -> None:
    """Clients cannot create links; links placed on the host are neither listed
    nor followed, for reading or writing."""
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    with running_server(tmp_path) as srv:
        (srv.dropbox() / "evil.zip").symlink_to(outside)
        (srv.paths.reports("acme") / "evil.html").symlink_to(outside)
        (srv.paths.reports("acme") / "evil-dir").symlink_to(tmp_path)
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            with sftp.open("real.zip", "wb") as remote:
                remote.write(b"PK")
            with pytest.raises(PermissionError, match="symbolic links are not allowed"):
                sftp.symlink("real.zip", "link.zip")
            assert sftp.listdir("/dropbox") == ["real.zip"]
            assert sftp.listdir("/reports") == []
            with pytest.raises(FileNotFoundError):
                sftp.stat("evil.zip")
            with pytest.raises(PermissionError, match="not a file"):
                sftp.open("evil.zip", "wb")
            with pytest.raises(FileNotFoundError):
                sftp.open("/reports/evil.html", "rb")
            with pytest.raises(FileNotFoundError):
                sftp.listdir("/reports/evil-dir")
        assert outside.read_text() == "outside"


def test_oversized_upload_is_refused_mid_write(tmp_path: Path) -> None:
    """An upload past ``max_upload_bytes`` fails with a message, its partial file
    is deleted, nothing is reported; an upload of exactly the limit passes."""
    (tmp_path / "big.zip").write_bytes(random_bytes(300_000))
    (tmp_path / "fits.zip").write_bytes(random_bytes(100_000))
    with running_server(tmp_path, sftp={"max_upload_bytes": 100_000}) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            with pytest.raises(OSError, match="larger than the limit of 100000 bytes"):
                sftp.put(str(tmp_path / "big.zip"), "big.zip")
            refused = srv.logs.wait("upload_refused", file="big.zip")
            assert refused["reason"] == "too_large"
            assert not (srv.dropbox() / "big.zip").exists()
            sftp.put(str(tmp_path / "fits.zip"), "fits.zip")
        [upload] = srv.wait_uploads(1)
        assert upload.path.name == "fits.zip"
    assert [u.path.name for u in srv.uploads] == ["fits.zip"]


def test_shell_and_exec_are_refused(tmp_path: Path) -> None:
    """Only the sftp subsystem is served: no shell, no commands."""
    with running_server(tmp_path) as srv:
        transport = paramiko_transport(srv.port)
        try:
            transport.auth_password("acme", PASSWORD)
            for request in ("exec_command", "invoke_shell"):
                channel = transport.open_session()
                with pytest.raises(paramiko.SSHException):
                    if request == "exec_command":
                        channel.exec_command("cat /etc/passwd")
                    else:
                        channel.invoke_shell()
                channel.close()
        finally:
            transport.close()


def test_an_unforeseen_failure_is_answered_plainly(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug inside a request handler reaches the client as a plain refusal (no
    "Uncaught exception", no Python names or messages) and the log as the traceback."""
    from rosterdrop.sftp.filesystem import DropboxFS

    def broken(self: DropboxFS, vpath: object) -> None:
        raise RuntimeError("internal detail /srv/secret")

    monkeypatch.setattr(DropboxFS, "_stat", broken)
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            with pytest.raises(OSError) as refused:
                sftp.stat("dropbox/x.zip")
            text = str(refused.value)
            assert "could not complete this request" in text
            assert "internal detail" not in text and "Uncaught" not in text
            assert sftp.normalize(".") == "/"  # the session goes on
        failed = srv.logs.wait("sftp_request_failed", request="stat")
        assert failed["log_level"] == "error"
