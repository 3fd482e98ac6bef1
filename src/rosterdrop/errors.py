"""The one exception tree of rosterdrop.

Problems found *in the data* of an upload are not exceptions: they are issues
(see ``issues.py``) collected into the run's report. Exceptions are for the
cases where rosterdrop itself cannot go on::

    RosterdropError
    ├── ConfigError          the TOML config is unreadable or invalid
    ├── UsageError           a command was called with arguments that cannot work
    │   ├── NotFound         an unknown tenant, run id or person
    │   └── ConflictError    the run was moved by someone else meanwhile (approved twice)
    ├── InputError           a path cannot be read or written
    ├── StoreError           the database failed or is not reachable
    ├── MailError            a report email could not be delivered
    ├── SftpError            the SFTP server could not start
    ├── SourceError          a tenant's SIS (OneRoster REST API) could not be read
    └── DeliveryError        an outlet (SFTP destination, alert) did not take a delivery

Foreign exceptions (zipfile, polars, SQLAlchemy, smtplib, asyncssh, httpx, OSError)
are translated where they enter, ``raise StoreError(...) from exc``, so callers
only ever catch ours.
"""

from __future__ import annotations


class RosterdropError(Exception):
    """Base of every error rosterdrop raises on purpose."""


class ConfigError(RosterdropError):
    """The configuration file is missing, unreadable or invalid."""


class UsageError(RosterdropError):
    """A command cannot run with the arguments it was given."""


class NotFound(UsageError):
    """A tenant, run or person named on the command line does not exist."""


class ConflictError(UsageError):
    """The thing to change changed meanwhile: e.g. a held run another admin approved."""


class InputError(RosterdropError):
    """A file or folder cannot be read or written."""


class StoreError(RosterdropError):
    """The directory database failed."""


class MailError(RosterdropError):
    """A report email could not be sent."""


class SftpError(RosterdropError):
    """The SFTP server could not start or serve."""


class SourceError(RosterdropError):
    """A tenant's SIS could not be read: unreachable, refused, or answered nonsense.

    ``reason`` is ``"unreachable"`` (network, timeouts, 429/5xx after retries),
    ``"refused"`` (401/403/404 and other refusals: credentials, permissions,
    the URL) or ``"invalid"`` (an answer that is not OneRoster JSON).
    """

    def __init__(self, message: str, *, reason: str = "unreachable") -> None:
        super().__init__(message)
        self.reason = reason


class DeliveryError(RosterdropError):
    """One attempt to deliver a run to an outlet failed; the ledger retries it later.

    ``code`` is one of the ``DELIVERY_*`` codes (codes.py): what the admin is told.
    """

    def __init__(self, message: str, *, code: str = "DELIVERY_FAILED") -> None:
        super().__init__(message)
        self.code = code
