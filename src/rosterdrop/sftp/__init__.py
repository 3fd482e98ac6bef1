"""The SFTP drop-box server (asyncssh): see ``server.DropboxServer``."""

from rosterdrop.sftp.server import DropboxServer

__all__ = ["DropboxServer"]
