"""rosterdrop: a self-hosted SFTP drop-box for school roster exports."""

__version__ = "0.1.0"
