"""SSH signatures (OpenSSH's PROTOCOL.sshsig, ed25519) made and checked in process, for audit checkpoints.

The same format `ssh-keygen -Y sign` writes, so anyone can check a checkpoint without Bastion:
`ssh-keygen -Y verify -f allowed_signers -I bastion -n bastion-audit-checkpoint -s sig < payload`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

NAMESPACE = "bastion-audit-checkpoint"
MAGIC = b"SSHSIG"
BEGIN, END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise ValueError("truncated signature")
    (n,) = struct.unpack(">I", buf[pos:pos + 4])
    if pos + 4 + n > len(buf):
        raise ValueError("truncated signature")
    return buf[pos + 4:pos + 4 + n], pos + 4 + n


def _signed_data(namespace: str, message: bytes) -> bytes:
    return (MAGIC + _string(namespace.encode()) + _string(b"") + _string(b"sha512")
            + _string(hashlib.sha512(message).digest()))


def _key_blob(public: Ed25519PublicKey) -> bytes:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(b"ssh-ed25519") + _string(raw)


def public_key_line(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class Signer:
    """Signs with an OpenSSH ed25519 private key file (the instance key: bastion.signing)."""

    def __init__(self, key_file: Path) -> None:
        key = serialization.load_ssh_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{key_file} is not an ed25519 key")
        self._key = key
        self.public_key = public_key_line(key.public_key())

    def sign(self, message: bytes, namespace: str = NAMESPACE) -> str:
        sig = self._key.sign(_signed_data(namespace, message))
        blob = (MAGIC + struct.pack(">I", 1) + _string(_key_blob(self._key.public_key())) + _string(namespace.encode())
                + _string(b"") + _string(b"sha512") + _string(_string(b"ssh-ed25519") + _string(sig)))
        text = base64.b64encode(blob).decode()
        return "\n".join([BEGIN, *(text[i:i + 70] for i in range(0, len(text), 70)), END]) + "\n"


def load_public_key(line: str) -> Ed25519PublicKey:
    key = serialization.load_ssh_public_key(line.strip().encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an ssh-ed25519 public key")
    return key


def verify(armored: str, message: bytes, public: Ed25519PublicKey, namespace: str = NAMESPACE) -> bool:
    """True when `armored` is `public`'s signature of `message` in `namespace`."""
    try:
        body = "".join(line.strip() for line in armored.strip().splitlines()
                       if line.strip() and not line.startswith("-----"))
        blob = base64.b64decode(body, validate=True)
        if not blob.startswith(MAGIC) or blob[6:10] != struct.pack(">I", 1):
            return False
        key_blob, pos = _read_string(blob, 10)
        ns, pos = _read_string(blob, pos)
        _reserved, pos = _read_string(blob, pos)
        hash_alg, pos = _read_string(blob, pos)
        sig_blob, pos = _read_string(blob, pos)
        kind, spos = _read_string(sig_blob, 0)
        sig, _ = _read_string(sig_blob, spos)
    except (ValueError, TypeError):
        return False
    if key_blob != _key_blob(public) or ns != namespace.encode() or kind != b"ssh-ed25519":
        return False
    if hash_alg == b"sha512":
        digest = hashlib.sha512(message).digest()
    elif hash_alg == b"sha256":
        digest = hashlib.sha256(message).digest()
    else:
        return False
    signed = MAGIC + _string(ns) + _string(b"") + _string(hash_alg) + _string(digest)
    try:
        public.verify(sig, signed)
    except InvalidSignature:
        return False
    return True
