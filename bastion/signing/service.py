"""Signing keys and commit verdicts: the only writer of the signing tables.

The verdict on a commit follows Gitea's order (models/asymkey/gpg_key_commit_verification.go):
find the key by the signature's issuer, check the signature, then require that the committer's
e-mail is a verified e-mail of the key's owner (and, for GPG, one of the key's user IDs). A commit
the signer committed but authored as someone else is `partially_verified` (GitHub's name): the
signature vouches for the committer, not for the author it names.

Over 500 lines on purpose: keys, verdicts and the signed-commits rule are written only here, so every
change that can alter a verdict (a key, an e-mail, vigilant mode) invalidates stored verdicts in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts import service as accounts_service
from bastion.accounts.models import User, UserEmail
from bastion.accounts.service import notify
from bastion.audit import checkpoints as audit_checkpoints
from bastion.audit.actions import AuditAction
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest, Conflict, Forbidden, NotFound
from bastion.hub import Hub
from bastion.mail import Mailer
from bastion.repos import annotations
from bastion.repos import commit as repo_commit
from bastion.repos.models import Repo
from bastion.repos.service import REPO_FLAGS, SIGNED_BRANCHES, accepts_instance_commits, signed_commits_required
from bastion.signing.models import CommitSignature, GpgKey, GpgSubkey, SigningPreference, SshSigningKey
from bastion.signing.verify import (
    GpgContext,
    InstanceKey,
    SshResult,
    parse_gpg_key,
    parse_ssh_key,
    ssh_signature_key,
    ssh_verify,
)
from bastion.storage.gitstore import GitRepo

VERIFIED, UNVERIFIED, UNSIGNED = "verified", "unverified", "unsigned"
PARTIALLY_VERIFIED = "partially_verified"  # signed by its committer, authored as someone else
INSTANCE_SIGNER = "Bastion (instance key)"  # a space: no account can be called this
INSTANCE_KEY_REFUSED = ("This is the instance's own signing key (it signs the commits Bastion writes): it cannot "
                        "be added to an account")
MAX_KEYS_PER_USER = 50
RULE_SETTING = REPO_FLAGS["requireSignedCommits"]
RULE_BRANCHES = SIGNED_BRANCHES
LOOKUP_CHUNK = 500
ZERO = "0" * 40

_instance: InstanceKey | None = None


# ---- start-up -----------------------------------------------------------------------------------

def install(hub: Hub) -> InstanceKey:
    """Load (or create) the instance key, sign Bastion's own commits with it, verify every commit."""
    global _instance
    _instance = InstanceKey.load_or_create(hub.settings.resolved_data_dir / "signing")
    repo_commit.commit_signer = _instance.sign
    audit_checkpoints.use_instance_key(_instance.path)  # the audit chain's checkpoints are signed with it too
    if on_commit not in repo_commit.post_commit_hooks:
        repo_commit.post_commit_hooks.append(on_commit)
    return _instance


def instance_key() -> InstanceKey | None:
    return _instance


# ---- keys ---------------------------------------------------------------------------------------

def verified_emails(session: Session, user_id: int) -> set[str]:
    return set(session.scalars(select(UserEmail.email_lower).where(
        UserEmail.user_id == user_id, UserEmail.verified_at.is_not(None))))


def _count_keys(session: Session, user_id: int) -> int:
    return (len(list(session.scalars(select(GpgKey.id).where(GpgKey.user_id == user_id))))
            + len(list(session.scalars(select(SshSigningKey.id).where(SshSigningKey.user_id == user_id)))))


def add_gpg_key(session: Session, user: User, armored: str, tmp_dir: Path | None = None) -> GpgKey:
    """Add a GPG public key: one key, not revoked, with a user ID that is a verified e-mail of `user`."""
    if not isinstance(armored, str) or not armored.strip():
        raise BadRequest("'key' must be an ASCII-armored GPG public key")
    info = parse_gpg_key(armored, tmp_dir)
    if info.revoked:
        raise BadRequest(f"GPG key {info.key_id} is revoked")
    mine = verified_emails(session, user.id)
    if not mine.intersection(info.emails):
        shown = ", ".join(info.emails) or "none"
        raise BadRequest(f"None of the key's user IDs ({shown}) is a verified e-mail address of your account: "
                         "add and verify the address first")
    if session.scalar(select(GpgKey.id).where(GpgKey.fingerprint == info.fingerprint)) is not None:
        raise Conflict(f"GPG key {info.key_id} has already been added")
    if _count_keys(session, user.id) >= MAX_KEYS_PER_USER:
        raise BadRequest(f"At most {MAX_KEYS_PER_USER} signing keys per account")
    key = GpgKey(user_id=user.id, fingerprint=info.fingerprint, key_id=info.key_id, armored=armored.strip() + "\n",
                 emails=info.emails, expires_at=info.expires_at)
    key.subkeys = [GpgSubkey(key_id=s.key_id, fingerprint=s.fingerprint, primary=s.primary, can_sign=s.can_sign,
                             revoked=s.revoked, expires_at=s.expires_at) for s in info.subkeys]
    session.add(key)
    session.flush()
    invalidate_user(session, user.id, [s.key_id for s in info.subkeys])
    audit.record(session, AuditAction.USER_GPG_KEY_ADD, target=("user", user.name), namespace=user.name,
                 details={"key_id": info.key_id, "fingerprint": info.fingerprint, "emails": info.emails,
                          "subkeys": [s.key_id for s in info.subkeys if not s.primary]})
    return key


def remove_gpg_key(session: Session, user: User, key_pk: int) -> None:
    key = session.scalar(select(GpgKey).where(GpgKey.id == key_pk, GpgKey.user_id == user.id))
    if key is None:
        raise NotFound("GPG key not found")
    ids = [s.key_id for s in key.subkeys]
    audit.record(session, AuditAction.USER_GPG_KEY_REMOVE, target=("user", user.name), namespace=user.name,
                 details={"key_id": key.key_id, "fingerprint": key.fingerprint})
    session.delete(key)
    session.flush()
    invalidate_user(session, user.id, ids)


def list_gpg_keys(session: Session, user_id: int) -> list[GpgKey]:
    return list(session.scalars(select(GpgKey).where(GpgKey.user_id == user_id).order_by(GpgKey.id)))


def add_ssh_key(session: Session, user: User, text: str, title: str = "") -> SshSigningKey:
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'key' must be an SSH public key")
    if not isinstance(title, str) or len(title) > 100:
        raise BadRequest("'title' must be a string of at most 100 characters")
    info = parse_ssh_key(text)
    inst = _instance
    if inst is not None and info.fingerprint == inst.fingerprint:
        raise BadRequest(INSTANCE_KEY_REFUSED)
    if session.scalar(select(SshSigningKey.id).where(SshSigningKey.fingerprint == info.fingerprint)) is not None:
        raise Conflict(f"SSH key {info.fingerprint} has already been added")
    if _count_keys(session, user.id) >= MAX_KEYS_PER_USER:
        raise BadRequest(f"At most {MAX_KEYS_PER_USER} signing keys per account")
    key = SshSigningKey(user_id=user.id, title=title.strip() or info.comment[:100], key_type=info.key_type,
                        public_key=info.public_key, fingerprint=info.fingerprint)
    session.add(key)
    session.flush()
    invalidate_user(session, user.id, [info.fingerprint])
    audit.record(session, AuditAction.USER_SSH_SIGNING_KEY_ADD, target=("user", user.name), namespace=user.name,
                 details={"fingerprint": info.fingerprint, "type": info.key_type, "title": key.title})
    return key


def remove_ssh_key(session: Session, user: User, key_pk: int) -> None:
    key = session.scalar(select(SshSigningKey).where(SshSigningKey.id == key_pk, SshSigningKey.user_id == user.id))
    if key is None:
        raise NotFound("SSH signing key not found")
    audit.record(session, AuditAction.USER_SSH_SIGNING_KEY_REMOVE, target=("user", user.name), namespace=user.name,
                 details={"fingerprint": key.fingerprint})
    fingerprint = key.fingerprint
    session.delete(key)
    session.flush()
    invalidate_user(session, user.id, [fingerprint])


def list_ssh_keys(session: Session, user_id: int) -> list[SshSigningKey]:
    return list(session.scalars(select(SshSigningKey).where(SshSigningKey.user_id == user_id)
                                .order_by(SshSigningKey.id)))


def add_key(session: Session, user: User, kind: str, text: str, tmp_dir: Path | None = None) -> GpgKey | SshSigningKey:
    """Add a key of `kind` ("gpg" | "ssh"): what a settings page, the API and the CLI call."""
    if kind == "gpg":
        return add_gpg_key(session, user, text, tmp_dir)
    if kind == "ssh":
        return add_ssh_key(session, user, text)
    raise BadRequest(f"Unknown key kind {kind!r}")


def notify_key_change(session: Session, mailer: Mailer | None, user: User, subject: str, text: str) -> None:
    """Mail the account's primary address about a signing-key or vigilant-mode change (a key of someone
    else's makes their commits "Verified" as this user)."""
    notify(session, mailer, user, subject, text, review="/settings/keys")


def is_vigilant(session: Session, user_id: int) -> bool:
    pref = session.get(SigningPreference, user_id)
    return bool(pref and pref.vigilant)


def set_vigilant(session: Session, user: User, on: bool) -> None:
    pref = session.get(SigningPreference, user.id)
    if pref is None:
        pref = SigningPreference(user_id=user.id, vigilant=False)
        session.add(pref)
    if pref.vigilant == on:
        return
    pref.vigilant = on
    session.flush()
    invalidate_user(session, user.id)
    audit.record(session, AuditAction.USER_VIGILANT_MODE, target=("user", user.name), namespace=user.name,
                 details={"vigilant": on})


def invalidate_user(session: Session, user_id: int, key_ids: Iterable[str] = ()) -> int:
    """Forget verdicts that depend on `user_id`'s keys, e-mails or preferences (recomputed on read).

    Call it whenever a user's keys, verified e-mails or vigilant mode change. Verdicts of the instance key
    depend on none of them (no account holds that key) and are kept.
    """
    emails = verified_emails(session, user_id)
    conditions = [CommitSignature.signer_user_id == user_id]
    if emails:
        conditions += [CommitSignature.committer_email.in_(emails), CommitSignature.author_email.in_(emails)]
    ids = [k for k in key_ids if k]
    if ids:
        conditions.append(CommitSignature.key_id.in_(ids))
    not_instance = or_(CommitSignature.signer.is_(None), CommitSignature.signer != INSTANCE_SIGNER)
    result = session.execute(delete(CommitSignature).where(or_(*conditions), not_instance))
    return int(getattr(result, "rowcount", 0) or 0)


# A verified e-mail added or removed changes which commits can verify as this user.
accounts_service.verified_emails_changed_hooks.append(invalidate_user)


def gpg_key_json(key: GpgKey) -> dict[str, Any]:
    return {"id": key.id, "keyId": key.key_id, "fingerprint": key.fingerprint, "emails": key.emails,
            "createdAt": key.created_at.isoformat(),
            "expiresAt": key.expires_at.isoformat() if key.expires_at else None,
            "subkeys": [{"keyId": s.key_id, "fingerprint": s.fingerprint, "canSign": s.can_sign,
                         "revoked": s.revoked, "expiresAt": s.expires_at.isoformat() if s.expires_at else None}
                        for s in key.subkeys if not s.primary],
            "publicKey": key.armored}


def ssh_key_json(key: SshSigningKey) -> dict[str, Any]:
    return {"id": key.id, "title": key.title, "type": key.key_type, "fingerprint": key.fingerprint,
            "publicKey": key.public_key, "createdAt": key.created_at.isoformat()}


# ---- verdicts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    status: str
    sig_type: str | None = None
    key_id: str | None = None
    signer: str | None = None
    signer_user_id: int | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The API contract of a commit's "signature" field (kept stable)."""
        return {"status": self.status, "type": self.sig_type, "keyId": self.key_id, "signer": self.signer,
                "reason": self.reason}

    @classmethod
    def from_row(cls, row: CommitSignature) -> Verdict:
        return cls(row.status, row.sig_type, row.key_id, row.signer, row.signer_user_id, row.reason)


class Verifier:
    """Verdicts for commits, against the keys and e-mails in `session`; one gpg keyring per verifier."""

    def __init__(self, session: Session, tmp_dir: Path | None = None) -> None:
        self.session = session
        self._gpg = GpgContext(tmp_dir)
        self._owners: dict[str, User | None] = {}
        self._emails: dict[int, set[str]] = {}

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self._gpg.close()

    def _owner_of(self, email: str) -> User | None:
        """The account that verified `email` (verified addresses are unique across accounts)."""
        if email not in self._owners:
            row = self.session.scalar(select(UserEmail).where(UserEmail.email_lower == email,
                                                              UserEmail.verified_at.is_not(None)))
            self._owners[email] = row.user if row is not None else None
        return self._owners[email]

    def _verified(self, user_id: int) -> set[str]:
        if user_id not in self._emails:
            self._emails[user_id] = verified_emails(self.session, user_id)
        return self._emails[user_id]

    def verify(self, commit: pygit2.Commit) -> Verdict:
        return self._authorship(self._signature_verdict(commit), (commit.author.email or "").strip().lower())

    def _authorship(self, verdict: Verdict, author: str) -> Verdict:
        """`verified` only when the signer's account is the author too (by a verified e-mail), as it is the
        committer: a signature does not vouch for the author a commit names."""
        if verdict.status != VERIFIED or verdict.signer_user_id is None:
            return verdict  # the instance key signs only commits Bastion wrote for their author
        if author and author in self._verified(verdict.signer_user_id):
            return verdict
        return dataclasses.replace(verdict, status=PARTIALLY_VERIFIED,
                                   reason=f"authored by {author or '(no e-mail)'}, not by the signer")

    def _signature_verdict(self, commit: pygit2.Commit) -> Verdict:
        committer = (commit.committer.email or "").strip().lower()
        signature, payload = commit.gpg_signature
        if not signature:
            return self._unsigned(commit)
        if payload is None:
            return Verdict(UNVERIFIED, None, reason="bad signature: no signed payload")
        head = signature.lstrip()[:64]
        if head.startswith(b"-----BEGIN SSH SIGNATURE-----"):
            return self._ssh(signature, payload, committer)
        if head.startswith(b"-----BEGIN PGP SIGNATURE-----"):
            return self._gpg_verdict(signature, payload, committer)
        return Verdict(UNVERIFIED, None, reason="unsupported signature format (only GPG and SSH are checked)")

    def _unsigned(self, commit: pygit2.Commit) -> Verdict:
        claimed = dict.fromkeys(e for e in ((commit.committer.email or "").strip().lower(),
                                             (commit.author.email or "").strip().lower()) if e)
        for email in claimed:
            owner = self._owner_of(email)
            if owner is not None and is_vigilant(self.session, owner.id):
                return Verdict(UNVERIFIED, None, signer_user_id=owner.id,
                               reason=f"unsigned: {email} belongs to an account in vigilant mode, which "
                                      "signs all of its commits")
        return Verdict(UNSIGNED)

    def _owner_checks(self, sig_type: str, key_id: str, owner: User, committer: str,
                      key_emails: list[str] | None) -> Verdict:
        if committer not in self._verified(owner.id):
            other = self._owner_of(committer)
            if other is not None and other.id != owner.id:
                reason = (f"key owner differs: the key belongs to {owner.name}, the committer e-mail {committer} "
                          "to another account")
            else:
                reason = f"committer e-mail {committer or '(none)'} is not a verified e-mail of the key's owner"
            return Verdict(UNVERIFIED, sig_type, key_id, owner.name, owner.id, reason)
        if key_emails is not None and committer not in key_emails:
            return Verdict(UNVERIFIED, sig_type, key_id, owner.name, owner.id,
                           f"committer e-mail {committer} is not a verified e-mail of the key's owner "
                           "listed in the key's user IDs")
        return Verdict(VERIFIED, sig_type, key_id, owner.name, owner.id)

    def _gpg_verdict(self, signature: bytes, payload: bytes, committer: str) -> Verdict:
        result = self._gpg.verify(signature, payload)
        if result.status == "no_pubkey" and result.issuer:
            query = select(GpgKey).join(GpgSubkey).where(GpgSubkey.key_id == result.issuer)
            if result.issuer_fingerprint:
                query = query.where(GpgSubkey.fingerprint == result.issuer_fingerprint)
            candidates = list(self.session.scalars(query.distinct()))
            if not candidates:
                return Verdict(UNVERIFIED, "gpg", result.issuer,
                               reason=f"unknown key: GPG key {result.issuer} is not in any Bastion user's profile")
            for key in candidates:
                self._gpg.import_key(key.fingerprint, key.armored)
            result = self._gpg.verify(signature, payload)
        key_id = result.issuer
        if result.status == "no_pubkey":
            return Verdict(UNVERIFIED, "gpg", key_id, reason=f"unknown key: GPG key {key_id} is not known")
        if result.status in ("bad", "error"):
            return Verdict(UNVERIFIED, "gpg", key_id, reason=f"bad signature: {result.detail}")
        key = self.session.scalar(select(GpgKey).where(GpgKey.fingerprint == result.primary_fingerprint))
        if key is None:
            return Verdict(UNVERIFIED, "gpg", key_id, reason=f"unknown key: GPG key {key_id} is not known")
        owner = self.session.get(User, key.user_id)
        assert owner is not None
        if result.status == "expired_key":
            return Verdict(UNVERIFIED, "gpg", key_id, owner.name, owner.id,
                           f"expired key: GPG key {key_id} has expired")
        if result.status == "revoked_key":
            return Verdict(UNVERIFIED, "gpg", key_id, owner.name, owner.id,
                           f"revoked key: GPG key {key_id} is revoked")
        if result.status == "expired_sig":
            return Verdict(UNVERIFIED, "gpg", key_id, owner.name, owner.id, "expired signature")
        return self._owner_checks("gpg", key_id or key.key_id, owner, committer, key.emails)

    def _ssh(self, signature: bytes, payload: bytes, committer: str) -> Verdict:
        found = ssh_signature_key(signature, payload)
        if not found.ok or found.fingerprint is None:
            return Verdict(UNVERIFIED, "ssh", reason=f"bad signature: {found.detail}")
        fingerprint = found.fingerprint
        inst = _instance
        if inst is not None and fingerprint == inst.fingerprint:
            if inst.verify(signature, payload):
                return Verdict(VERIFIED, "ssh", fingerprint, INSTANCE_SIGNER)
            return Verdict(UNVERIFIED, "ssh", fingerprint,
                           reason="bad signature: the commit does not match its signature")
        key = self.session.scalar(select(SshSigningKey).where(SshSigningKey.fingerprint == fingerprint))
        if key is None:
            return Verdict(UNVERIFIED, "ssh", fingerprint,
                           reason=f"unknown key: SSH key {fingerprint} is not in any Bastion user's profile")
        owner = self.session.get(User, key.user_id)
        assert owner is not None
        verdict = self._owner_checks("ssh", fingerprint, owner, committer, None)
        if verdict.status != VERIFIED:
            return verdict
        # The decisive check: the owner's key, allowed for the committer's (verified) e-mail, signed it.
        checked: SshResult = ssh_verify(signature, payload, committer, [key.public_key])
        if not checked.ok:
            return Verdict(UNVERIFIED, "ssh", fingerprint, owner.name, owner.id, f"bad signature: {checked.detail}")
        return verdict


def _store(session: Session, repo_id: int, commit: pygit2.Commit, verdict: Verdict) -> None:
    row = CommitSignature(repo_id=repo_id, commit_sha=str(commit.id), status=verdict.status, sig_type=verdict.sig_type,
                          key_id=verdict.key_id, signer=verdict.signer, signer_user_id=verdict.signer_user_id,
                          reason=verdict.reason, committer_email=(commit.committer.email or "").strip().lower()[:320],
                          author_email=(commit.author.email or "").strip().lower()[:320], verified_at=utcnow())
    try:
        # A savepoint: a concurrent reader may store the same verdict first; theirs is as good.
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        pass


def _stored(session: Session, repo_id: int, shas: list[str]) -> dict[str, Verdict]:
    out: dict[str, Verdict] = {}
    for i in range(0, len(shas), LOOKUP_CHUNK):
        chunk = shas[i:i + LOOKUP_CHUNK]
        for row in session.scalars(select(CommitSignature).where(CommitSignature.repo_id == repo_id,
                                                                 CommitSignature.commit_sha.in_(chunk))):
            out[row.commit_sha] = Verdict.from_row(row)
    return out


def record_commits(session: Session, repo: Repo, git: GitRepo, shas: list[str]) -> dict[str, Verdict]:
    """The verdict of each commit: stored ones as they are, the others verified now and stored."""
    verdicts = _stored(session, repo.id, shas)
    missing = [sha for sha in dict.fromkeys(shas) if sha not in verdicts]
    if missing:
        with Verifier(session) as verifier:
            for sha in missing:
                commit = git.repo[sha].peel(pygit2.Commit)
                verdict = verifier.verify(commit)
                _store(session, repo.id, commit, verdict)
                verdicts[sha] = verdict
    return verdicts


def signatures_for(hub: Hub, repo: Repo, commits: list[pygit2.Commit]) -> dict[str, dict[str, Any]]:
    """The "signature" field of each listed commit (verifying only commits with no stored verdict)."""
    git = hub.git(repo.storage_key)
    with transaction(hub.sessions) as session:
        verdicts = record_commits(session, repo, git, [str(c.id) for c in commits])
    return {sha: v.as_json() for sha, v in verdicts.items()}


# ---- the rule -----------------------------------------------------------------------------------

annotations.signatures = signatures_for


# Whether `ref` of `repo` accepts only verified commits: a repo setting, read where repos keeps them.
rule_applies = signed_commits_required


def rule_problems(ref: str, verdicts: Iterable[tuple[str, Verdict]], accept_instance: bool = True) -> list[str]:
    """Why these commits may not enter `ref` under the signed-commits rule: any verdict but `verified`, and a
    commit the instance key signed (API commits, super-squash) unless the repo accepts those."""
    out = []
    for sha, verdict in verdicts:
        if verdict.status == VERIFIED and verdict.signer == INSTANCE_SIGNER and not accept_instance:
            out.append(f"{ref}: commit {sha[:12]} is signed by the instance key (an API commit or super-squash); "
                       "this repository's signed-commits rule does not accept those (requireSignedCommitsAcceptInstance"
                       " is off): commit with git, signed with your own key (git commit -S), and push")
        elif verdict.status != VERIFIED:
            why = f" ({verdict.reason})" if verdict.reason else ""
            out.append(f"{ref}: commit {sha[:12]} is {verdict.status}{why}; this repository requires signed "
                       "commits: sign with a GPG or SSH key added in your Bastion settings (git commit -S)")
    return out


def new_commit_shas(git: GitRepo, tip: str) -> list[str]:
    """`tip` and every commit reachable from it that no ref reaches yet (what enters the repository).

    Only for storing verdicts: the rule judges `entering_ref()`.
    """
    repo = git.repo
    start = repo[tip].peel(pygit2.Commit)
    walker = repo.walk(start.id, pygit2.enums.SortMode.NONE)
    for name in repo.references:
        try:
            walker.hide(repo.references[name].peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.InvalidSpecError, pygit2.GitError):
            continue
    return list(dict.fromkeys([str(start.id), *(str(c.id) for c in walker)]))


def entering_ref(git: GitRepo, repo_row: Repo, ref: str, new: str, old: str | None) -> list[str]:
    """The commits a move of `ref` from `old` (None: created) to `new` brings under the rule, newest first:
    `git rev-list new ^old ^<every other ref the rule covers>`.

    Commits that only uncovered refs reach are included: being in the repository (on an uncovered
    branch, say) is not being accepted by the rule. Commits a covered ref already holds are not: they
    entered under the rule, or were there before it was switched on (so a branch can be created from
    `main` even when main's early history predates the rule).
    """
    repo = git.repo
    start = repo[new].peel(pygit2.Commit)
    walker = repo.walk(start.id, pygit2.enums.SortMode.TOPOLOGICAL)
    hide = [old] if old is not None and old != ZERO else []
    hide += [str(r.target) for r in repo.references.objects
             if r.name != ref and r.type == pygit2.enums.ReferenceType.DIRECT and rule_applies(repo_row, r.name)]
    for oid in hide:
        # Fail closed: a value we cannot read hides nothing, so more history is judged.
        with contextlib.suppress(KeyError, ValueError, pygit2.InvalidSpecError, pygit2.GitError):
            walker.hide(repo[oid].peel(pygit2.Commit).id)
    return [str(c.id) for c in walker]


def judge_ref(session: Session, repo: Repo, git: GitRepo, ref: str, entering: list[str]) -> list[str]:
    """The rule's problems with `entering` (from `entering_ref()`) for `ref`; none if `ref` is not covered.

    Verdicts already stored are reused; only commits without one are verified (and stored).
    """
    if not rule_applies(repo, ref) or not entering:
        return []
    verdicts = record_commits(session, repo, git, entering)
    return rule_problems(ref, ((s, verdicts[s]) for s in entering), accepts_instance_commits(repo))


def check_ref_move(session: Session, repo: Repo, git: GitRepo, ref: str, old: str | None, new: str) -> None:
    """Raise Forbidden if moving `ref` from `old` (None: created) to `new` breaks the repo's rule.

    For every path that moves a ref to commits it did not reach (pushes, API commits, branch or
    tag creation from another revision): call it before the ref moves.
    """
    if not rule_applies(repo, ref):
        return
    problems = judge_ref(session, repo, git, ref, entering_ref(git, repo, ref, new, old))
    if problems:
        raise Forbidden("Rejected: " + problems[0])


def on_commit(hub: Hub, session: Session, repo: Repo, result: repo_commit.CommitResult) -> None:
    """Post-commit hook (API commits, pushes, new repos): store verdicts, enforce the repo's rule.

    Runs before the ref moves. The ref's old value is `result.parent_oid`, except for a pull request
    the commit creates (`pr_number` set): that ref does not exist yet.
    """
    git = hub.git(repo.storage_key)
    record_commits(session, repo, git, new_commit_shas(git, result.commit_oid))
    old = None if result.pr_number is not None else result.parent_oid
    check_ref_move(session, repo, git, result.ref_name, old, result.commit_oid)


def check_push(session: Session, repo: Repo, git: GitRepo, commits_by_ref: dict[str, list[str]],
               entering_by_ref: dict[str, list[str]]) -> list[str]:
    """Pre-receive: verify what a push brings (objects still quarantined) and apply the repo's rule.

    `commits_by_ref`: the commits new to the repository, per ref (their verdicts are stored);
    `entering_by_ref`: per ref the rule covers, `entering_ref(…)` — what the push brings under the
    rule there, including commits that only uncovered refs held.
    """
    problems: list[str] = []
    for shas in commits_by_ref.values():
        record_commits(session, repo, git, shas)
    for ref, entering in entering_by_ref.items():
        problems += judge_ref(session, repo, git, ref, entering)
    return problems
