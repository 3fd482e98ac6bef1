"""Who may do what in the console (pure; docs/console.md, "Roles").

Three roles, Apple School Manager's: an **administrator** may do everything on its
tenants; a **site manager** may act (approve, discard, Sync Now, upload, edit and
reset people, pause and resume) and see a tenant's settings; a **people manager**
reads history, reports and people. An admin sees only its tenants (an empty
list: every tenant, administrators only). Every check is made on the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from rosterdrop.config import AdminAccount


class Permission(StrEnum):
    READ = "read"
    """Dashboard, history, run pages and their artifacts, people."""
    ACT = "act"
    """Approve, discard, Sync Now, upload, edit or reset a person, pause, resume."""
    SETTINGS = "settings"
    """A tenant's page: its settings, SFTP accounts and host-key fingerprint."""


GRANTS: dict[str, frozenset[Permission]] = {
    "administrator": frozenset(Permission),
    "site_manager": frozenset({Permission.READ, Permission.ACT, Permission.SETTINGS}),
    "people_manager": frozenset({Permission.READ}),
}


def sees(admin: AdminAccount, tenant: str) -> bool:
    """The tenant is one of the admin's (an empty list is every tenant)."""
    return not admin.tenants or tenant in admin.tenants


def may(admin: AdminAccount, permission: Permission, tenant: str) -> bool:
    return sees(admin, tenant) and permission in GRANTS.get(admin.role, frozenset())


def visible(admin: AdminAccount, tenants: Iterable[str]) -> list[str]:
    """The admin's tenants among ``tenants``, in their order."""
    return [t for t in tenants if sees(admin, t)]


ROLE_NAMES = {"administrator": "Administrator", "site_manager": "Site Manager",
              "people_manager": "People Manager"}
