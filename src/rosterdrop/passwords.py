"""Password hashes for SFTP accounts: never plain text in the config.

``hash_password`` makes an argon2id PHC string (argon2-cffi's defaults), the
format ``rosterdrop hash-password`` prints. ``verify_password`` accepts:

- argon2 PHC strings: ``$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>``
  (``argon2i`` and ``argon2d`` too);
- scrypt strings: ``$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>``, salt and
  hash in base64 without padding. The alphabet may be the standard one or
  passlib's (``.`` instead of ``+``), so passlib ``scrypt`` hashes work as is.
  The salt is used as the decoded bytes; the hash length sets the key length.

A malformed or unknown hash never raises: it simply does not match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_ARGON2 = PasswordHasher()

_SCRYPT = re.compile(
    r"\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,3}),p=(?P<p>\d{1,3})"
    r"\$(?P<salt>[A-Za-z0-9+/.]*)\$(?P<hash>[A-Za-z0-9+/.]+)"
)
# Bounds keep a hostile or mistyped config from asking for gigabytes of memory.
_SCRYPT_MAX_LN = 20
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16
_SCRYPT_MAX_MEMORY = 1024**3


def hash_password(plain: str) -> str:
    """Return an argon2id PHC string for ``plain``."""
    return _ARGON2.hash(plain)


def verify_password(hash: str, plain: str) -> bool:
    """True when ``plain`` matches ``hash`` (argon2 PHC or ``$scrypt$``)."""
    if not isinstance(hash, str) or not isinstance(plain, str):
        return False
    if hash.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        return _verify_argon2(hash, plain)
    if hash.startswith("$scrypt$"):
        return _verify_scrypt(hash, plain)
    return False


def _verify_argon2(hash: str, plain: str) -> bool:
    try:
        return _ARGON2.verify(hash, plain)
    except (VerificationError, InvalidHashError, ValueError, TypeError):
        return False


def _verify_scrypt(hash: str, plain: str) -> bool:
    match = _SCRYPT.fullmatch(hash)
    if not match:
        return False
    ln, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
    if not (1 <= ln <= _SCRYPT_MAX_LN and 1 <= r <= _SCRYPT_MAX_R and 1 <= p <= _SCRYPT_MAX_P):
        return False
    salt = _b64decode(match["salt"])
    expected = _b64decode(match["hash"])
    if salt is None or expected is None or not 16 <= len(expected) <= 128:
        return False
    try:
        actual = hashlib.scrypt(
            plain.encode("utf-8"),
            salt=salt,
            n=2**ln,
            r=r,
            p=p,
            dklen=len(expected),
            maxmem=_SCRYPT_MAX_MEMORY,
        )
    except (ValueError, MemoryError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(actual, expected)


def _b64decode(text: str) -> bytes | None:
    text = text.replace(".", "+")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
