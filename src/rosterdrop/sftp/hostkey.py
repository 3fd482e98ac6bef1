"""The server's ed25519 host key: generated on first start, then reused."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import asyncssh

from rosterdrop.errors import SftpError
from rosterdrop.paths import private_file, private_folder

HOST_KEY_NAME = "ssh_host_ed25519_key"


def load_or_create_host_key(folder: Path) -> asyncssh.SSHKey:
    """Read ``folder/ssh_host_ed25519_key`` (mode 0600), creating it if missing.

    Creation is atomic (write a temporary file, hard-link it into place), so
    two processes starting on one shared state folder end up with one key.
    """
    path = folder / HOST_KEY_NAME
    try:
        private_folder(folder)
        if not path.exists():
            _create(path)
        private_file(path)
        return asyncssh.read_private_key(path)
    except asyncssh.KeyImportError as exc:
        raise SftpError(f"host key {path} is not a valid private key: {exc}") from exc
    except OSError as exc:
        raise SftpError(
            f"cannot use host key {path}: {exc.strerror or exc}"
        ) from exc


def _create(path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="rosterdrop")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key())
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    public = path.with_name(path.name + ".pub")
    if not public.exists():
        public.write_bytes(asyncssh.read_private_key(path).export_public_key())
        private_file(public)  # the folder's rule (every file its owner's), not a secret
