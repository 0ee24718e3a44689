"""Passwords: argon2id hashing with rehash-on-login, and the policy a new password must meet.

Verification always costs one argon2 computation, also for unknown users (against a dummy hash),
so that response time does not reveal whether an account exists.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.errors import BadRequest

# argon2-cffi's defaults are RFC 9106's second recommendation (argon2id, t=3, m=64 MiB, p=4).
HASHER = PasswordHasher(type=Type.ID)
MAX_LENGTH = 1024  # argon2 takes any length; a bound keeps hashing cost predictable


@cache
def _common_passwords() -> frozenset[str]:
    text = (Path(__file__).parent / "common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@cache
def _dummy_hash() -> str:
    return HASHER.hash("bastion-dummy-password-for-unknown-users")


def check_policy(password: str, min_length: int, *, username: str = "", email: str = "") -> None:
    """Raise BadRequest with a message a person can act on when `password` is too weak."""
    if len(password) < min_length:
        raise BadRequest(f"Your password must be at least {min_length} characters long.")
    if len(password) > MAX_LENGTH:
        raise BadRequest(f"Your password must be at most {MAX_LENGTH} characters long.")
    lowered = password.lower()
    if lowered in _common_passwords():
        raise BadRequest("This password is one of the most commonly used (and breached) passwords; choose another.")
    for personal in (username.lower(), email.lower().partition("@")[0]):
        if len(personal) >= 3 and lowered in (personal, personal * 2, personal + "123", personal + "1234"):
            raise BadRequest("Your password must not be based on your username or e-mail address.")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash). A missing hash is checked against a dummy so timing stays the same."""
    if len(password) > MAX_LENGTH:
        password = password[:MAX_LENGTH]
    try:
        HASHER.verify(stored_hash or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    if stored_hash is None:
        return False, False
    return True, HASHER.check_needs_rehash(stored_hash)
