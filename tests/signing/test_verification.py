"""Commits pushed with real `git` are verified with real keys: each status and reason the commits API
reports, and how a verdict follows key changes and vigilant mode.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bastion.accounts.models import User, UserEmail
from bastion.db import utcnow
from tests.conftest import BastionServer
from tests.signing.conftest import GpgHome, SshKey, Work, api, keys_api, signature_of


def add_gpg(server: BastionServer, token: str, armored: str) -> dict:  # type: ignore[type-arg]
    """Add a GPG key to the token user's profile (from their browser: keys are not managed with tokens)."""
    resp = keys_api(server, token, "POST", "/api/settings/gpg-keys", json={"key": armored})
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def add_ssh(server: BastionServer, token: str, public: str) -> dict:  # type: ignore[type-arg]
    """Add an SSH signing key to the token user's profile (from their browser, as add_gpg)."""
    resp = keys_api(server, token, "POST", "/api/settings/ssh-signing-keys", json={"key": public, "title": "laptop"})
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def add_unverified_email(server: BastionServer, user: str, email: str) -> None:
    """An address the user claimed but never confirmed (what the accounts settings page creates)."""
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with Session(engine) as session, session.begin():
            uid = session.scalar(sa.select(User.id).where(User.name == user))
            session.add(UserEmail(user_id=uid, email=email, email_lower=email.lower(), primary=False,
                                  verified_at=None, created_at=utcnow()))
    finally:
        engine.dispose()


def test_verified_gpg_commit(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    email = f"{work.repo.owner}@example.com"
    fpr = gpg_home.generate(f"Owner <{email}>")
    added = add_gpg(server, work.repo.token, gpg_home.export(fpr))
    assert added["fingerprint"] == fpr and added["emails"] == [email]
    work.use_gpg(gpg_home, fpr)
    sha = work.commit("a.txt")
    work.push()
    assert signature_of(server, work.repo, sha) == {
        "status": "verified", "type": "gpg", "keyId": fpr[-16:], "signer": work.repo.owner, "reason": None}


def test_verified_ssh_commit(server: BastionServer, work: Work, ssh_key: SshKey) -> None:
    added = add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    sha = work.commit("a.txt")
    work.push()
    sig = signature_of(server, work.repo, sha)
    assert sig == {"status": "verified", "type": "ssh", "keyId": added["fingerprint"], "signer": work.repo.owner,
                   "reason": None}
    assert added["fingerprint"].startswith("SHA256:")


def test_ssh_commit_with_someone_elses_email(server: BastionServer, work: Work, ssh_key: SshKey) -> None:
    add_ssh(server, work.repo.token, ssh_key.public)
    other, _ = server.create_user()
    work.use_ssh(ssh_key)
    work.identity(f"{other}@example.com")  # a verified address of another account
    sha = work.commit("a.txt")
    work.push()
    sig = signature_of(server, work.repo, sha)
    assert sig["status"] == "unverified" and sig["type"] == "ssh"
    assert sig["reason"].startswith("key owner differs")


def test_gpg_commit_with_wrong_email(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    fpr = gpg_home.generate(f"Owner <{work.repo.owner}@example.com>")
    add_gpg(server, work.repo.token, gpg_home.export(fpr))
    work.use_gpg(gpg_home, fpr)
    work.identity("nobody-owns-this@example.org")
    sha = work.commit("a.txt")
    work.push()
    sig = signature_of(server, work.repo, sha)
    assert sig["status"] == "unverified" and sig["type"] == "gpg" and sig["keyId"] == fpr[-16:]
    assert "nobody-owns-this@example.org is not a verified e-mail of the key's owner" in sig["reason"]


def test_gpg_commit_with_unverified_email(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    owner = work.repo.owner
    fpr = gpg_home.generate(f"Owner <{owner}@example.com>")
    gpg_home.add_uid(fpr, f"Owner <{owner}-alt@example.com>")
    add_unverified_email(server, owner, f"{owner}-alt@example.com")
    add_gpg(server, work.repo.token, gpg_home.export(fpr))  # accepted: one UID is verified
    work.use_gpg(gpg_home, fpr)
    work.identity(f"{owner}-alt@example.com")
    sha = work.commit("a.txt")
    work.push()
    sig = signature_of(server, work.repo, sha)
    assert sig["status"] == "unverified" and sig["signer"] == owner
    assert "is not a verified e-mail of the key's owner" in sig["reason"]

    # A key whose only identity is the unverified address is refused outright.
    lone = gpg_home.generate(f"Alt <{owner}-alt@example.com>")
    resp = keys_api(server, work.repo.token, "POST", "/api/settings/gpg-keys", json={"key": gpg_home.export(lone)})
    assert resp.status_code == 400 and "verified e-mail" in resp.headers["X-Error-Message"]


def test_expired_gpg_key(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    # Created and used in 2020, expired since mid-2020: the signature is sound, the key is not.
    fpr = gpg_home.generate(f"Owner <{work.repo.owner}@example.com>", expire="2020-06-01", at="20200101T000000")
    gpg_home.fake_time = "20200301T000000"
    add_gpg(server, work.repo.token, gpg_home.export(fpr))
    work.use_gpg(gpg_home, fpr)
    sha = work.commit("a.txt")
    work.push()
    sig = signature_of(server, work.repo, sha)
    assert sig["status"] == "unverified" and sig["type"] == "gpg" and sig["signer"] == work.repo.owner
    assert sig["reason"].startswith("expired key")


def test_revoked_gpg_subkey(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    fpr = gpg_home.generate(f"Owner <{work.repo.owner}@example.com>")
    sub = gpg_home.add_subkey(fpr)
    work.use_gpg(gpg_home, sub)
    signed_before = work.commit("a.txt")
    gpg_home.revoke_subkey(fpr, 1)
    added = add_gpg(server, work.repo.token, gpg_home.export(fpr))
    assert [(s["fingerprint"], s["revoked"]) for s in added["subkeys"]] == [(sub, True)]
    work.use_gpg(gpg_home, fpr)  # the primary still signs
    signed_after = work.commit("b.txt")
    work.push()
    revoked = signature_of(server, work.repo, signed_before)
    assert revoked["status"] == "unverified" and revoked["keyId"] == sub[-16:]
    assert revoked["reason"].startswith("revoked key")
    assert signature_of(server, work.repo, signed_after)["status"] == "verified"


def test_unknown_key_then_added_then_removed(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    fpr = gpg_home.generate(f"Owner <{work.repo.owner}@example.com>")
    work.use_gpg(gpg_home, fpr)
    sha = work.commit("a.txt")
    work.push()
    sig = signature_of(server, work.repo, sha)
    assert sig == {"status": "unverified", "type": "gpg", "keyId": fpr[-16:], "signer": None,
                   "reason": f"unknown key: GPG key {fpr[-16:]} is not in any Bastion user's profile"}

    # Adding the key recomputes the stored verdict; removing it does again.
    key = add_gpg(server, work.repo.token, gpg_home.export(fpr))
    assert signature_of(server, work.repo, sha)["status"] == "verified"
    resp = keys_api(server, work.repo.token, "DELETE", f"/api/settings/gpg-keys/{key['id']}")
    assert resp.status_code == 200, resp.text
    assert signature_of(server, work.repo, sha)["reason"].startswith("unknown key")


def test_ssh_key_removed_makes_commit_unknown(server: BastionServer, work: Work, ssh_key: SshKey) -> None:
    key = add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    sha = work.commit("a.txt")
    work.push()
    assert signature_of(server, work.repo, sha)["status"] == "verified"
    assert keys_api(server, work.repo.token, "DELETE", f"/api/settings/ssh-signing-keys/{key['id']}").status_code == 200
    sig = signature_of(server, work.repo, sha)
    assert sig["status"] == "unverified" and sig["reason"].startswith("unknown key")


def _tamper(work: Work, sha: str) -> str:
    """The same commit with its message changed and the old signature kept."""
    raw = work.git("cat-file", "commit", sha, cwd=work.path).stdout
    assert "gpgsig " in raw
    forged = raw.replace("add a.txt", "add a.txt (harmless, honest)")
    (work.path.parent / "forged").write_text(forged)
    new = work.git("hash-object", "-t", "commit", "-w", str(work.path.parent / "forged"), cwd=work.path).stdout.strip()
    work.git("reset", "-q", "--hard", new, cwd=work.path)
    return new


def test_tampered_gpg_commit(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    fpr = gpg_home.generate(f"Owner <{work.repo.owner}@example.com>")
    add_gpg(server, work.repo.token, gpg_home.export(fpr))
    work.use_gpg(gpg_home, fpr)
    forged = _tamper(work, work.commit("a.txt"))
    work.push()
    sig = signature_of(server, work.repo, forged)
    assert sig["status"] == "unverified" and sig["type"] == "gpg"
    assert sig["reason"].startswith("bad signature")


def test_tampered_ssh_commit(server: BastionServer, work: Work, ssh_key: SshKey) -> None:
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    forged = _tamper(work, work.commit("a.txt"))
    work.push()
    sig = signature_of(server, work.repo, forged)
    assert sig["status"] == "unverified" and sig["type"] == "ssh" and sig["reason"].startswith("bad signature")


def test_unsigned_commit_and_vigilant_mode(server: BastionServer, work: Work) -> None:
    sha = work.commit("a.txt", sign=False)
    work.push()
    assert signature_of(server, work.repo, sha) == {"status": "unsigned", "type": None, "keyId": None,
                                                    "signer": None, "reason": None}
    resp = keys_api(server, work.repo.token, "PUT", "/api/settings/signing", json={"vigilantMode": True})
    assert resp.status_code == 200, resp.text
    assert api(server, "GET", "/api/settings/signing", work.repo.token).json() == {"vigilantMode": True}
    sig = signature_of(server, work.repo, sha)
    assert sig["status"] == "unverified" and sig["type"] is None and "vigilant mode" in sig["reason"]
    keys_api(server, work.repo.token, "PUT", "/api/settings/signing", json={"vigilantMode": False})
    assert signature_of(server, work.repo, sha)["status"] == "unsigned"
