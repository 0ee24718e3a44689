"""Token wire format: `bst_` + 30 random base62 characters + a 6-character base62 CRC32.
An IdP's SCIM token (bastion.scim) is the same with the prefix `bsc_`: never an account's token.

The prefix makes a leaked token recognisable; the checksum lets a scanner tell a real token
from a look-alike offline, without a database (as GitHub's tokens do). Changing any part of
this format breaks every issued token and every secret detector: extend, never alter.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

PREFIX = "bst_"
SCIM_PREFIX = "bsc_"
PREFIXES = (PREFIX, SCIM_PREFIX)
BODY_LEN = 30
CHECKSUM_LEN = 6
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Both kinds: the secret scanner finds (and Bastion revokes) a leaked SCIM token as it does an access token.
TOKEN_RE = re.compile(rf"\b(?:{PREFIX}|{SCIM_PREFIX})[0-9A-Za-z]{{{BODY_LEN + CHECKSUM_LEN}}}\b")


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def checksum(prefix_and_body: str) -> str:
    return _base62(zlib.crc32(prefix_and_body.encode()), CHECKSUM_LEN)


def generate(prefix: str = PREFIX) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LEN))
    head = prefix + body
    return head + checksum(head)


def is_well_formed(token: str, prefixes: tuple[str, ...] = (PREFIX,)) -> bool:
    """True when `token` has Bastion's shape (an access token's unless `prefixes` says otherwise) and a valid
    checksum (no database needed)."""
    if len(token) != len(PREFIX) + BODY_LEN + CHECKSUM_LEN or not token.startswith(prefixes):
        return False
    if any(c not in ALPHABET for c in token[len(PREFIX):]):
        return False
    head, check = token[: -CHECKSUM_LEN], token[-CHECKSUM_LEN:]
    return secrets.compare_digest(checksum(head), check)


def hash_token(token: str) -> str:
    """Tokens carry 178 bits of entropy, so one SHA-256 is a sound storage hash (no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()
