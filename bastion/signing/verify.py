"""The cryptography, delegated: `gpg` (a throw-away keyring per verification context) and
`ssh-keygen -Y` check signatures and parse keys; the instance's own SSH key signs commits.

Nothing here reads the database. Every tool runs with a timeout, without a terminal and never
talks to an agent, a key server or the network.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.errors import BadRequest

TIMEOUT = 30
MAX_GPG_KEY = 256 * 1024
MAX_SSH_KEY = 16 * 1024
EMAIL_IN_UID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
SSH_GOOD = re.compile(r'^Good "git" signature (?:for \S+ )?with (\S+) key (SHA256:[A-Za-z0-9+/=]+)', re.M)
# What an SSH signing key may be: git signs with these (no certificates, no FIDO attestation quirks).
SSH_KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                           "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                           "sk-ecdsa-sha2-nistp256@openssh.com"})
INSTANCE_PRINCIPAL = "bastion-instance"
SAFE_PRINCIPAL = re.compile(r"[A-Za-z0-9._%+@-]{1,320}")


class ToolMissing(RuntimeError):
    """gpg or ssh-keygen is not installed: verification is impossible, never "unsigned"."""


def _run(args: list[str], data: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    if shutil.which(args[0]) is None:
        raise ToolMissing(f"{args[0]} is not installed (apt-get install gnupg openssh-client)")
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"}
    return subprocess.run(args, input=data, capture_output=True, timeout=TIMEOUT, env={**base, **(env or {})},
                          check=False)


def _ts(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value.isdigit() and int(value) > 0 else None


# ---- GPG keys -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpgSubkeyInfo:
    key_id: str
    fingerprint: str
    primary: bool
    can_sign: bool
    revoked: bool
    expires_at: datetime | None


@dataclass(frozen=True)
class GpgKeyInfo:
    fingerprint: str
    key_id: str
    revoked: bool
    expires_at: datetime | None
    emails: list[str]
    subkeys: list[GpgSubkeyInfo]


@contextmanager
def _gnupg_home(parent: Path | None = None) -> Iterator[Path]:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="gpg-", dir=parent))
    try:
        os.chmod(home, 0o700)
        # An existing common.conf keeps GnuPG >= 2.4.1 from defaulting fresh homes to keyboxd,
        # a daemon that --no-autostart would forbid.
        (home / "common.conf").write_text("")
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str, trust_all: bool = True) -> list[str]:
    # Trust is Bastion's decision (which keys it imports), not the web of trust's. A dry-run import
    # must not name a trust model: with one, gpg insists on a trustdb the empty home lacks.
    trust = ["--trust-model", "always"] if trust_all else []
    return ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--no-autostart", "--no-permission-warning",
            *trust, *args]


def parse_gpg_key(armored: str, tmp_dir: Path | None = None) -> GpgKeyInfo:
    """Validate one ASCII-armored public key and describe it (gpg's dry-run import, nothing kept)."""
    if len(armored) > MAX_GPG_KEY:
        raise BadRequest(f"GPG key too large (max {MAX_GPG_KEY // 1024} KiB)")
    if "PRIVATE KEY BLOCK" in armored:
        raise BadRequest("That is a private key: never share it. Paste the public key (gpg --armor --export KEYID)")
    if "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in armored:
        raise BadRequest("Paste an ASCII-armored public key (gpg --armor --export KEYID)")
    with _gnupg_home(tmp_dir) as home:
        proc = _run(_gpg(home, "--with-colons", "--fixed-list-mode", "--import-options", "show-only",
                         "--import", trust_all=False), armored.encode())
    records = [line.split(":") for line in proc.stdout.decode("utf-8", "replace").splitlines()]
    if any(r[0] in ("sec", "ssb") for r in records):
        raise BadRequest("That is a private key: never share it. Paste the public key")
    primaries = [r for r in records if r[0] == "pub"]
    if len(primaries) != 1:
        raise BadRequest("Paste exactly one GPG public key" if primaries else
                         "Not a valid GPG public key (gpg could not read it)")
    emails: list[str] = []
    subkeys: list[GpgSubkeyInfo] = []
    current: list[str] | None = None
    for rec in records:
        if rec[0] in ("pub", "sub"):
            current = rec
        elif rec[0] == "fpr" and current is not None and len(rec) > 9:
            caps = current[11] if len(current) > 11 else ""
            subkeys.append(GpgSubkeyInfo(key_id=current[4].upper(), fingerprint=rec[9].upper(),
                                         primary=current[0] == "pub", can_sign="s" in caps,
                                         revoked=current[1] == "r", expires_at=_ts(current[6])))
            current = None
        elif rec[0] == "uid" and len(rec) > 9 and rec[1] != "r":
            uid = rec[9].replace("\\x3a", ":")
            match = EMAIL_IN_UID.search(uid)
            email = match.group(1) if match else (uid.strip() if "@" in uid and " " not in uid.strip() else "")
            if email and email.lower() not in emails:
                emails.append(email.lower())
    primary = next((s for s in subkeys if s.primary), None)
    if primary is None:
        raise BadRequest("Not a valid GPG public key (no fingerprint)")
    return GpgKeyInfo(fingerprint=primary.fingerprint, key_id=primary.key_id, revoked=primary.revoked,
                      expires_at=primary.expires_at, emails=emails, subkeys=subkeys)


@dataclass
class GpgResult:
    """What `gpg --verify --status-fd` said about one detached signature."""

    status: str  # good | bad | expired_key | revoked_key | expired_sig | no_pubkey | error
    issuer: str | None = None  # long key id of the signing (sub)key
    issuer_fingerprint: str | None = None
    primary_fingerprint: str | None = None
    detail: str = ""


def parse_gpg_status(output: str) -> GpgResult:
    """Interpret status lines (doc/DETAILS in GnuPG). Anything but one clean signature is not good."""
    lines = [line[len("[GNUPG:] "):].split(" ") for line in output.splitlines() if line.startswith("[GNUPG:] ")]
    if sum(1 for parts in lines if parts[0] == "NEWSIG") != 1:
        return GpgResult("error", detail="expected exactly one signature")
    result = GpgResult("error", detail="no verdict from gpg")
    for parts in lines:
        kw, args = parts[0], parts[1:]
        if kw == "GOODSIG" and args:
            result.status, result.issuer = "good", args[0].upper()
        elif kw == "BADSIG" and args:
            return GpgResult("bad", issuer=args[0].upper(), detail="the commit does not match its signature")
        elif kw == "EXPKEYSIG" and args:
            result.status, result.issuer = "expired_key", args[0].upper()
        elif kw == "REVKEYSIG" and args:
            result.status, result.issuer = "revoked_key", args[0].upper()
        elif kw == "EXPSIG" and args:
            result.status, result.issuer = "expired_sig", args[0].upper()
        elif kw == "VALIDSIG" and len(args) >= 10:
            result.issuer_fingerprint, result.primary_fingerprint = args[0].upper(), args[9].upper()
        elif kw == "ERRSIG" and len(args) >= 6:
            fpr = args[6].upper() if len(args) > 6 and args[6] not in ("", "-") else None
            rc = args[5]
            return GpgResult("no_pubkey" if rc == "9" else "error", issuer=args[0].upper(), issuer_fingerprint=fpr,
                             detail="unknown key" if rc == "9" else f"gpg cannot check this signature (code {rc})")
    if result.status != "error" and result.primary_fingerprint is None:
        return GpgResult("error", issuer=result.issuer, detail="gpg gave no VALIDSIG")
    return result


class GpgContext:
    """A keyring for one verification context (a push, a listing): only the keys it imported.

    A signature is checked against exactly the public keys the caller chose to trust here, so
    what verifies is decided by Bastion's database, never by a shared or user-writable keyring.
    """

    def __init__(self, tmp_dir: Path | None = None) -> None:
        self._tmp_dir = tmp_dir
        self._cm: Any = None
        self._home: Path | None = None
        self.imported: set[str] = set()  # primary fingerprints
        self._lock = threading.Lock()

    def _ensure_home(self) -> Path:
        if self._home is None:
            self._cm = _gnupg_home(self._tmp_dir)
            self._home = self._cm.__enter__()
        return self._home

    def import_key(self, fingerprint: str, armored: str) -> None:
        with self._lock:
            if fingerprint in self.imported:
                return
            home = self._ensure_home()
            _run(_gpg(home, "--quiet", "--import"), armored.encode())
            self.imported.add(fingerprint)

    def verify(self, signature: bytes, payload: bytes) -> GpgResult:
        with self._lock:
            home = self._ensure_home()
            work = Path(tempfile.mkdtemp(prefix="sig-", dir=home))
            try:
                (work / "sig").write_bytes(signature)
                (work / "data").write_bytes(payload)
                proc = _run(_gpg(home, "--status-fd", "1", "--verify", str(work / "sig"), str(work / "data")))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return parse_gpg_status(proc.stdout.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = self._home = None

    def __enter__(self) -> GpgContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- SSH keys -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SshKeyInfo:
    key_type: str
    public_key: str  # "type base64"
    fingerprint: str
    comment: str


def parse_ssh_key(text: str) -> SshKeyInfo:
    """One OpenSSH public key line; ssh-keygen decides whether it is a key and computes its fingerprint."""
    if len(text) > MAX_SSH_KEY:
        raise BadRequest("SSH key too large")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise BadRequest("Paste exactly one SSH public key (the contents of ~/.ssh/id_ed25519.pub)")
    if "PRIVATE KEY" in text:
        raise BadRequest("That is a private key: never share it. Paste the public key (~/.ssh/id_ed25519.pub)")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES or not re.fullmatch(r"[A-Za-z0-9+/]+={0,3}", parts[1]):
        raise BadRequest("Not an SSH public key: expected 'ssh-ed25519 AAAA… comment' "
                         f"(supported types: {', '.join(sorted(SSH_KEY_TYPES))})")
    public_key = f"{parts[0]} {parts[1]}"
    with tempfile.TemporaryDirectory(prefix="sshkey-") as tmp:
        path = Path(tmp) / "key.pub"
        path.write_text(public_key + "\n")
        proc = _run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)])
    match = re.search(r"(SHA256:[A-Za-z0-9+/=]+)", proc.stdout.decode())
    if proc.returncode != 0 or match is None:
        raise BadRequest("Not a valid SSH public key (ssh-keygen could not read it)")
    return SshKeyInfo(parts[0], public_key, match.group(1), parts[2].strip() if len(parts) > 2 else "")


@dataclass(frozen=True)
class SshResult:
    ok: bool
    fingerprint: str | None = None
    detail: str = ""


def ssh_signature_key(signature: bytes, payload: bytes) -> SshResult:
    """Check the signature against the key embedded in it (namespace "git"): which key signed, if any."""
    with tempfile.TemporaryDirectory(prefix="sshsig-") as tmp:
        sig = Path(tmp) / "sig"
        sig.write_bytes(signature)
        proc = _run(["ssh-keygen", "-Y", "check-novalidate", "-n", "git", "-s", str(sig)], payload)
    match = SSH_GOOD.search(proc.stdout.decode("utf-8", "replace"))
    if proc.returncode != 0 or match is None:
        return SshResult(False, detail="the commit does not match its signature")
    return SshResult(True, match.group(2))


def ssh_verify(signature: bytes, payload: bytes, principal: str, public_keys: list[str]) -> SshResult:
    """`ssh-keygen -Y verify`: good only if one of `public_keys`, allowed for `principal`, signed it."""
    if not public_keys:
        return SshResult(False, detail="no key")
    # The principal goes into an allowed-signers line, where quotes, commas and wildcards are syntax.
    if not SAFE_PRINCIPAL.fullmatch(principal):
        return SshResult(False, detail="e-mail address cannot be checked")
    with tempfile.TemporaryDirectory(prefix="sshsig-") as tmp:
        sig, allowed = Path(tmp) / "sig", Path(tmp) / "allowed_signers"
        sig.write_bytes(signature)
        allowed.write_text("".join(f'"{principal}" namespaces="git" {key}\n' for key in public_keys))
        proc = _run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", "git",
                     "-s", str(sig)], payload)
    match = SSH_GOOD.search(proc.stdout.decode("utf-8", "replace"))
    if proc.returncode != 0 or match is None:
        return SshResult(False, detail="the commit does not match its signature")
    return SshResult(True, match.group(2))


# ---- the instance key ---------------------------------------------------------------------------

@dataclass
class InstanceKey:
    """The instance's SSH signing key (ed25519), created in the data dir on first start.

    SSH rather than GPG: signing needs no agent and no keyring, only a 0600 file and ssh-keygen.
    """

    path: Path
    public_key: str
    fingerprint: str
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load_or_create(cls, directory: Path) -> InstanceKey:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / "instance_ed25519"
        if not path.exists():
            tmp = Path(tempfile.mkdtemp(prefix="newkey-", dir=directory))
            try:
                proc = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", INSTANCE_PRINCIPAL,
                             "-f", str(tmp / "key")])
                if proc.returncode != 0:
                    raise RuntimeError(f"ssh-keygen failed: {proc.stderr.decode(errors='replace')}")
                # link() fails if another server process won the race: everyone uses one key.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp / "key", path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        proc = _run(["ssh-keygen", "-y", "-f", str(path)])
        if proc.returncode != 0:
            raise RuntimeError(f"cannot read the instance signing key {path}: {proc.stderr.decode(errors='replace')}")
        info = parse_ssh_key(proc.stdout.decode())
        return cls(path, info.public_key, info.fingerprint)

    @property
    def allowed_signers(self) -> str:
        """The line for git's gpg.ssh.allowedSignersFile that makes `git verify-commit` trust this key."""
        return f'{INSTANCE_PRINCIPAL} namespaces="git" {self.public_key}\n'

    def sign(self, content: str) -> str:
        """An SSH signature (namespace "git") over a commit object's text, as git writes it in gpgsig."""
        with self._lock:
            proc = _run(["ssh-keygen", "-Y", "sign", "-q", "-n", "git", "-f", str(self.path)], content.encode())
        out = proc.stdout.decode()
        if proc.returncode != 0 or "BEGIN SSH SIGNATURE" not in out:
            raise RuntimeError(f"signing failed: {proc.stderr.decode(errors='replace')}")
        return out.rstrip("\n")

    def verify(self, signature: bytes, payload: bytes) -> bool:
        return ssh_verify(signature, payload, INSTANCE_PRINCIPAL, [self.public_key]).ok
