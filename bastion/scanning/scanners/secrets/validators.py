"""Offline checks that tell a real credential from a look-alike: checksums and structure.

Each function takes the matched text and answers without a network call or a database; a
checksum passing is strong evidence (the odds of a random string passing CRC32 are 1 in 4e9).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from typing import Any

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Validation:
    """The outcome of an offline check that did not reject the candidate.

    `checksum` is True only for integrity checks (CRC, bech32, a parsed key, a decoded macaroon):
    those make a finding "checksum"-verified. Structural checks that merely fit the format leave
    it False. `encrypted` marks private keys that parsed as encrypted (still a finding).
    """

    checksum: bool = False
    encrypted: bool = False
    note: str = ""


STRUCTURE = Validation()
CHECKSUM = Validation(checksum=True)


def base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(reversed(out))


def crc32_base62_ok(random_part: str) -> bool:
    """GitHub/npm style: the last 6 chars are base62(CRC32(the 30 random chars before them))."""
    if len(random_part) < 7:
        return False
    body, check = random_part[:-6], random_part[-6:]
    return base62(zlib.crc32(body.encode()), 6) == check


def b64decode_loose(data: str, *, urlsafe: bool = False) -> bytes | None:
    """Decode base64 that may lack padding; None when it is not base64 at all."""
    data = data.strip()
    data += "=" * (-len(data) % 4)
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(data)
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def json_object(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- PyPI: a base64 macaroon in libmacaroons' v2 binary format ------------------------------

_MACAROON_EOS, _MACAROON_LOCATION, _MACAROON_ID, _MACAROON_VID, _MACAROON_SIG = 0, 1, 2, 4, 6


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 28:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _read_section(buf: bytes, i: int) -> tuple[dict[int, bytes], int]:
    """One v2 section: (tag, varint length, value) fields in ascending tag order, then EOS."""
    fields: dict[int, bytes] = {}
    last = -1
    while True:
        if i >= len(buf):
            raise ValueError("truncated section")
        tag = buf[i]
        i += 1
        if tag == _MACAROON_EOS:
            return fields, i
        if tag not in (_MACAROON_LOCATION, _MACAROON_ID, _MACAROON_VID) or tag <= last:
            raise ValueError("unexpected field")
        size, i = _read_varint(buf, i)
        if i + size > len(buf):
            raise ValueError("field overruns token")
        fields[tag] = buf[i : i + size]
        i += size
        last = tag


def parse_macaroon_v2(raw: bytes) -> tuple[bytes, bytes, list[bytes], bytes]:
    """(location, identifier, caveat ids, signature) or ValueError: the structure PyPI issues."""
    if not raw or raw[0] != 2:
        raise ValueError("not a v2 macaroon")
    header, i = _read_section(raw, 1)
    if _MACAROON_ID not in header:
        raise ValueError("no identifier")
    caveats: list[bytes] = []
    while True:
        if i >= len(raw):
            raise ValueError("truncated caveats")
        if raw[i] == _MACAROON_EOS:
            i += 1
            break
        section, i = _read_section(raw, i)
        if _MACAROON_ID not in section:
            raise ValueError("caveat without identifier")
        caveats.append(section[_MACAROON_ID])
    if i >= len(raw) or raw[i] != _MACAROON_SIG:
        raise ValueError("no signature")
    size, i = _read_varint(raw, i + 1)
    signature = raw[i : i + size]
    if size != 32 or i + size != len(raw):
        raise ValueError("signature is not one trailing HMAC-SHA256")
    return header.get(_MACAROON_LOCATION, b""), header[_MACAROON_ID], caveats, signature


def pypi_token(token: str) -> Validation | None:
    raw = b64decode_loose(token.removeprefix("pypi-"), urlsafe=True)
    if raw is None:
        return None
    try:
        location, identifier, _caveats, _sig = parse_macaroon_v2(raw)
    except ValueError:
        return None
    if location not in (b"pypi.org", b"test.pypi.org") or not identifier:
        return None
    return Validation(checksum=True, note=location.decode())


# --- bech32 (age secret keys) ----------------------------------------------------------------

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _bech32_polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_BECH32_GEN):
            chk ^= g if (top >> i) & 1 else 0
    return chk


def bech32_ok(text: str) -> bool:
    text = text.lower()
    hrp, sep, data = text.rpartition("1")
    if not sep or not hrp or len(data) < 6 or any(c not in _BECH32 for c in data):
        return False
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    return _bech32_polymod(values + [_BECH32.index(c) for c in data]) == 1


def age_secret_key(key: str) -> Validation | None:
    return CHECKSUM if bech32_ok(key) else None


# --- OpenPGP armor: CRC-24 over the decoded body ---------------------------------------------


def crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def pgp_armor(block: str) -> Validation | None:
    lines = [ln.strip() for ln in block.strip().splitlines()[1:-1]]
    # Armor headers ("Version: ...") end at the first blank line, when there are any.
    if any(":" in ln for ln in lines[:3]) and "" in lines:
        lines = lines[lines.index("") + 1 :]
    lines = [ln for ln in lines if ln]
    crc_line = lines.pop() if lines and lines[-1].startswith("=") and len(lines[-1]) == 5 else None
    body = b64decode_loose("".join(lines))
    if body is None or len(body) < 64:
        return None
    if crc_line is None:
        return STRUCTURE
    expected = b64decode_loose(crc_line[1:])
    if expected is None or int.from_bytes(expected, "big") != crc24(body):
        return None
    return CHECKSUM


# --- private keys: parse, don't just match ----------------------------------------------------

_QUOTES = "\"'`"


def normalize_pem(block: str) -> str:
    """Undo the ways keys are embedded in code and JSON: `\\n` escapes, quotes, concatenation.

    Base64 uses `+` and `/`, so only characters outside its alphabet may be stripped: comment
    markers in front, and a quoted line's quotes plus whatever concatenation follows them.
    """
    block = block.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r", "")
    lines = []
    for raw in block.split("\n"):
        line = raw.strip().lstrip("#;*").strip()
        if line[:1] in _QUOTES and line[:1]:
            line = line[1:]
            cut = max(line.rfind(q) for q in _QUOTES)
            if cut != -1:
                line = line[:cut]
        line = line.rstrip("\\").strip()
        if line and line.strip("+,;"):
            lines.append(line)
    return "\n".join(lines) + "\n"


def private_key(block: str) -> Validation | None:
    """Parse with `cryptography`; an encrypted key is still a finding, flagged as such."""
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_ssh_private_key,
    )

    pem = normalize_pem(block).encode()
    loader = load_ssh_private_key if b"OPENSSH PRIVATE KEY" in pem[:64] else load_pem_private_key
    try:
        loader(pem, password=None)
    except TypeError:
        # cryptography's signal for "this key is encrypted and no password was given".
        return Validation(checksum=False, encrypted=True, note="encrypted")
    except (ValueError, IndexError):
        return None
    except Exception as exc:  # the loaders raise their own UnsupportedAlgorithm and friends
        if type(exc).__name__ == "UnsupportedAlgorithm":
            return Validation(checksum=False, note="unsupported algorithm")
        return None
    return CHECKSUM


def gcp_service_account(obj: dict[str, Any]) -> Validation | None:
    if obj.get("type") != "service_account":
        return None
    key = obj.get("private_key")
    if not isinstance(key, str) or "PRIVATE KEY" not in key:
        return None
    if not isinstance(obj.get("client_email"), str):
        return None
    result = private_key(key)
    if result is None or result.encrypted:
        return None
    return CHECKSUM


def azure_account_key(key: str) -> Validation | None:
    raw = b64decode_loose(key)
    return CHECKSUM if raw is not None and len(raw) == 64 else None


def jwt(token: str) -> Validation | None:
    """Three base64url parts; the header decodes to JSON naming a real signing algorithm."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[2]:
        return None
    header = json_object(b64decode_loose(parts[0], urlsafe=True))
    payload = json_object(b64decode_loose(parts[1], urlsafe=True))
    if header is None or payload is None:
        return None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        return None
    # Supabase "anon" keys are JWTs meant to ship in front-end code: publishable, not secret.
    if payload.get("role") == "anon":
        return None
    # jwt.io's sample token, pasted into countless tutorials.
    if payload.get("sub") == "1234567890" and payload.get("name") == "John Doe":
        return None
    return STRUCTURE


def discord_bot_token(token: str) -> Validation | None:
    """The first segment is the bot's user id (a snowflake) in base64."""
    raw = b64decode_loose(token.split(".", 1)[0], urlsafe=True)
    if raw is None:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return STRUCTURE if text.isdigit() and 15 <= len(text) <= 20 else None


def sentry_org_token(token: str) -> Validation | None:
    """`sntrys_` + base64 JSON claims (iat, url/region_url, org) + `_` + the secret."""
    body = token.removeprefix("sntrys_")
    claims_b64, _, secret = body.rpartition("_")
    claims = json_object(b64decode_loose(claims_b64))
    if claims is None or "iat" not in claims or not secret:
        return None
    return Validation(checksum=True, note="claims decoded")


def github_classic(token: str) -> Validation | None:
    return CHECKSUM if crc32_base62_ok(token.split("_", 1)[1]) else None


def npm_token(token: str) -> Validation | None:
    return CHECKSUM if crc32_base62_ok(token[4:]) else None


def bastion_token(token: str) -> Validation | None:
    # The format module owns the checksum definition; never re-implement it here.
    from bastion.tokens.format import PREFIXES, is_well_formed

    return CHECKSUM if is_well_formed(token, PREFIXES) else None
