"""Small secrets kept in the database, encrypted at rest (AES-256-GCM).

A copy of the database alone (a backup, a replica, a dump handed to support) must not hand out
what lets someone pass as a user: a TOTP key is such a secret. Each purpose gets its own key,
derived (HKDF-SHA256) from the instance key, which lives outside the database (the data dir's
`secret_key` or BASTION_SECRET_KEY). Each sealed value is bound to a context (e.g. its user id),
so a value copied onto another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "sb1:"
NONCE_BYTES = 12


class SealedValueError(Exception):
    """A sealed value that cannot be opened: another instance key, another context, or tampered with."""


class SecretBox:
    def __init__(self, instance_key: bytes, purpose: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"bastion secretbox v1: " + purpose.encode()).derive(instance_key)
        self._aead = AESGCM(key)

    @staticmethod
    def is_sealed(value: str) -> bool:
        return value.startswith(PREFIX)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, value: str, context: str) -> str:
        if not self.is_sealed(value):
            raise SealedValueError("not a sealed value")
        body = value[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            raise SealedValueError("the value does not open with this instance key and context") from None
