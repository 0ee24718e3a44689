"""Capability URLs: short-lived, HMAC-signed claims for requests that carry no credentials.

The LFS client PUTs uploads without an Authorization header, so the URL itself must prove
what it allows: one object (oid, size) into one repo, until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from bastion.errors import Forbidden


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, purpose: str, claims: dict[str, Any], ttl_seconds: int) -> str:
    body = dict(claims, p=purpose, exp=int(time.time()) + ttl_seconds)
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(key: bytes, purpose: str, token: str) -> dict[str, Any]:
    """The claims of a valid, unexpired token minted for `purpose`; Forbidden otherwise."""
    try:
        payload, mac = token.split(".")
        expected = hmac.new(key, payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise ValueError("bad signature")
        claims = json.loads(_unb64(payload))
    except (ValueError, TypeError) as exc:
        raise Forbidden("Invalid or tampered upload URL") from exc
    if claims.get("p") != purpose:
        raise Forbidden("This URL was issued for another purpose")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise Forbidden("This upload URL has expired; request a new one through the batch API")
    return claims
