"""Fixtures for commit-signature tests: real `gpg` and `ssh-keygen` keys, real `git` signing and
pushing over smart HTTP to a BastionServer. Every GNUPGHOME is private to its test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests.conftest import BastionServer
from tests.gitserver.conftest import Git, RepoHandle, make_repo

GPG_ENV_KEYS = ("PATH",)


def _run(args: list[str], env: dict[str, str], data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(args, input=data, env=env, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
    return proc


@dataclass
class GpgHome:
    """A throw-away GnuPG home. Short path under /tmp: gpg-agent's socket lives in it."""

    path: Path
    fake_time: str | None = None  # e.g. "20200301T000000": what `git commit -S` signs as "now"

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "GNUPGHOME": str(self.path), "LANG": "C"}

    def gpg(self, *args: str, data: bytes = b"") -> str:
        return _run(["gpg", "--batch", "--no-tty", *args], self.env, data).stdout.decode()

    def generate(self, uid: str, expire: str = "never", at: str | None = None) -> str:
        """A new primary ed25519 signing key; returns its fingerprint."""
        faked = [f"--faked-system-time={at}!"] if at else []
        self.gpg(*faked, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", expire)
        return self.fingerprints(uid)[0]

    def fingerprints(self, query: str) -> list[str]:
        """Fingerprints of the key matching `query`: the primary first, then its subkeys."""
        out = self.gpg("--with-colons", "--list-keys", query)
        return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]

    def add_subkey(self, fpr: str) -> str:
        self.gpg("--passphrase", "", "--quick-add-key", fpr, "ed25519", "sign", "never")
        return self.fingerprints(fpr)[-1]

    def add_uid(self, fpr: str, uid: str) -> None:
        self.gpg("--quick-add-uid", fpr, uid)

    def revoke_subkey(self, fpr: str, index: int = 1) -> None:
        # gpg 2.2 has no --quick-revoke-subkey: drive --edit-key through its command fd.
        commands = f"key {index}\nrevkey\ny\n0\n\ny\nsave\n"
        self.gpg("--yes", "--command-fd", "0", "--status-fd", "2", "--edit-key", fpr, data=commands.encode())

    def export(self, fpr: str) -> str:
        return self.gpg("--armor", "--export", fpr)

    def export_secret(self, fpr: str) -> str:
        return self.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--armor", "--export-secret-keys", fpr)

    def program(self) -> str:
        """A gpg wrapper for git's gpg.program, bound to this home (and fake clock, if set)."""
        script = self.path / "gpg-for-git"
        faked = f" --faked-system-time={self.fake_time}!" if self.fake_time else ""
        script.write_text(f"#!/bin/sh\nGNUPGHOME='{self.path}' exec gpg{faked} \"$@\"\n")
        script.chmod(0o755)
        return str(script)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, capture_output=True, timeout=30, check=False)
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture
def gpg_home() -> Iterator[GpgHome]:
    home = GpgHome(Path(tempfile.mkdtemp(prefix="bg", dir="/tmp")))
    home.path.chmod(0o700)
    yield home
    home.close()


@dataclass
class SshKey:
    path: Path

    @property
    def public(self) -> str:
        return self.path.with_suffix(".pub").read_text()


@pytest.fixture
def ssh_key(tmp_path: Path) -> SshKey:
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)], check=True,
                   capture_output=True, timeout=60)
    return SshKey(path)


@pytest.fixture
def git(tmp_path: Path) -> Git:
    home = tmp_path / "home"
    home.mkdir()
    config = home / ".gitconfig"
    config.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_GLOBAL": str(config),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false",
           "SSH_ASKPASS": "/bin/false", "LANG": "C", "NO_PROXY": "*", "GNUPGHOME": str(home / "no-gnupg")}
    runner = Git(env)
    runner("lfs", "install", "--skip-repo")
    return runner


@dataclass
class Work:
    """A clone of a Bastion repo with a committer identity; commits, signs and pushes with real git."""

    git: Git
    repo: RepoHandle
    path: Path
    settings: dict[str, str] = field(default_factory=dict)

    def configure(self, **values: str) -> None:
        for key, value in values.items():
            self.git("config", key.replace("__", "."), value, cwd=self.path)

    def identity(self, email: str, name: str = "Signing Tester") -> None:
        self.configure(user__email=email, user__name=name)

    def use_gpg(self, home: GpgHome, key: str) -> None:
        self.configure(gpg__format="openpgp", gpg__program=home.program(), user__signingkey=key + "!")

    def use_ssh(self, key: SshKey) -> None:
        self.configure(gpg__format="ssh", user__signingkey=str(key.path))

    def commit(self, name: str, sign: bool = True) -> str:
        (self.path / name).write_text(f"{name} {os.urandom(4).hex()}\n")
        self.git("add", "-A", cwd=self.path)
        self.git("commit", "-q", "-S" if sign else "--no-gpg-sign", "-m", f"add {name}", cwd=self.path)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD", cwd=self.path).stdout.strip()

    def push(self, ref: str = "main", check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.git("push", "origin", f"HEAD:refs/heads/{ref}", cwd=self.path, check=check)


@pytest.fixture
def repo(server: BastionServer) -> RepoHandle:
    return make_repo(server)


@pytest.fixture
def work(git: Git, repo: RepoHandle, tmp_path: Path) -> Work:
    path = tmp_path / "work"
    git("clone", "-q", repo.url(), str(path))
    w = Work(git, repo, path)
    w.identity(f"{repo.owner}@example.com")
    return w


def api(server: BastionServer, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)


BROWSER_PASSWORD = "signing-keys-browser-pw-7"


def key_browser(server: BastionServer, token: str) -> httpx.Client:
    """A browser session of the token's user, just signed in (so in sudo mode): signing keys and vigilant
    mode are changed only there, as on the Hub, never with a token. Users made without a password get one
    written to the database first (test setup; the session itself is a real sign-in through the form)."""
    from bastion.accounts.models import User
    from bastion.accounts.passwords import hash_password
    from tests.accounts.fixtures import PASSWORD, http_login, session_db

    name = api(server, "GET", "/api/whoami-v2", token).json()["name"]
    password = PASSWORD  # create_password_user's
    engine = session_db(server)
    try:
        with Session(engine) as db, db.begin():
            user = db.scalar(sa.select(User).where(User.name == name))
            assert user is not None
            if user.password_hash is None:  # server.create_user(): no password
                user.password_hash = hash_password(BROWSER_PASSWORD)
            if passwords_match(user.password_hash, BROWSER_PASSWORD):
                password = BROWSER_PASSWORD
    finally:
        engine.dispose()
    client = http_login(server, name, password)
    client.headers.update({"origin": server.url, "accept": "application/json"})
    return client


def passwords_match(password_hash: str, password: str) -> bool:
    from bastion.accounts.passwords import verify_password

    return verify_password(password_hash, password)[0]


def keys_api(server: BastionServer, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A change to the token user's signing keys (or vigilant mode) through the JSON API, from their browser."""
    client = key_browser(server, token)
    try:
        return client.request(method, path, **kwargs)
    finally:
        client.close()


def signature_of(server: BastionServer, repo: RepoHandle, sha: str, rev: str = "main") -> dict[str, Any]:
    """The "signature" field the commits API reports for `sha`."""
    resp = api(server, "GET", f"/api/models/{repo.repo_id}/commits/{rev}", repo.token)
    assert resp.status_code == 200, resp.text
    for entry in resp.json():
        if entry["id"] == sha:
            sig: dict[str, Any] = entry["signature"]
            return sig
    raise AssertionError(f"commit {sha} not listed on {rev}")
