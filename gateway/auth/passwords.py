"""Password hashes (argon2id), TOTP second factors (RFC 6238), and random secrets.

A stored hash carries its own parameters, so raising them later only needs
`needs_rehash` at the next good login; old hashes keep verifying.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is an attack
TOTP_ISSUER = "fixalloc"

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong name costs the same time as a
# wrong password and response times do not tell which names exist.
_DUMMY = _hasher.hash(secrets.token_hex(16))


class WeakPassword(ValueError):
    pass


def check_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip() != password:
        raise WeakPassword("a password may not start or end with white space")


def hash_password(password: str) -> str:
    check_strength(password)
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored` (None: an unknown user, always False)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


# -- TOTP ---------------------------------------------------------------------------------


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app enrolls from (as a QR code or typed in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step whose code `code` is, within one step of `at` (clock drift); None
    when it is none of them."""
    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now = totp.timecode(at)
    for offset in (0, -1, 1):
        if hmac.compare_digest(totp.generate_otp(now + offset), code):
            return now + offset
    return None


# -- bearer secrets -----------------------------------------------------------------------


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_id(prefix: str) -> str:
    """A public identifier: safe in logs, row keys and listings."""
    return f"{prefix}{secrets.token_hex(8)}"


def secret_hash(secret: str) -> str:
    """What is stored for a high-entropy secret: SHA-256 suffices (nothing to brute-force)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(secret_hash(secret), stored_hash)
