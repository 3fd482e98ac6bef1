"""Warnings from libraries that say nothing an operator can act on.

cryptography 51 warns that DSA is deprecated when asyncssh (and paramiko) import
its DSA module at start-up. rosterdrop offers and accepts no DSA key (docs/security.md:
weak SSH algorithms are refused), so the warning would only print a line on every
``rosterdrop`` command. It is silenced by its exact text; any other warning is shown.
tests/test_foreign_warnings.py fails once the libraries stop raising it, so the filter
goes when it is no longer needed.
"""

from __future__ import annotations

import warnings

DSA_DEPRECATED = r"DSA is deprecated"


def quiet_foreign_warnings() -> None:
    warnings.filterwarnings("ignore", message=DSA_DEPRECATED, category=UserWarning)
