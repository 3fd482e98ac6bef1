"""SFTP accounts from the settings: username → tenant and credentials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncssh

from rosterdrop.config import Settings
from rosterdrop.errors import SftpError

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class Account:
    username: str
    tenant: str
    password_hash: str
    keys: frozenset[bytes]
    """Public key blobs (``SSHKey.public_data``) of the authorized keys."""

    @property
    def has_credentials(self) -> bool:
        return bool(self.password_hash or self.keys)


def load_accounts(
    settings: Settings, passwords: Mapping[str, str] | None = None
) -> dict[str, Account]:
    """Every configured account; ``passwords`` overrides password hashes.

    Raises ``SftpError`` naming the config key of a key line that cannot be
    used (not an OpenSSH public key, options, DSA, RSA under 2048 bits).
    """
    passwords = passwords or {}
    accounts: dict[str, Account] = {}
    for tenant_key, tenant in settings.tenants.items():
        for index, account in enumerate(tenant.accounts):
            where = f"tenants.{tenant_key}.accounts[{index}]"
            keys = frozenset(
                _public_key(line, f"{where}.authorized_keys[{n}]")
                for n, line in enumerate(account.authorized_keys)
            )
            accounts[account.username] = Account(
                username=account.username,
                tenant=tenant_key,
                password_hash=passwords.get(account.username, account.password_hash),
                keys=keys,
            )
    return accounts


def _public_key(line: str, where: str) -> bytes:
    try:
        key = asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise SftpError(
            f"{where}: not an OpenSSH public key line ('ssh-ed25519 AAAA… comment'): {exc}"
        ) from exc
    algorithm = key.get_algorithm()
    if algorithm == "ssh-dss":
        raise SftpError(f"{where}: DSA keys are not accepted; use an ed25519 key")
    if algorithm == "ssh-rsa" and _rsa_bits(key) < MIN_RSA_BITS:
        raise SftpError(f"{where}: RSA keys need at least {MIN_RSA_BITS} bits")
    return bytes(key.public_data)


def _rsa_bits(key: asyncssh.SSHKey) -> int:
    crypto_key = key.pyca_key
    return int(getattr(crypto_key, "key_size", 0))
