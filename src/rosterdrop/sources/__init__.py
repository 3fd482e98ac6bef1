"""Where uploads come from besides SFTP: pulls from a SIS's API (``oneroster``)."""
