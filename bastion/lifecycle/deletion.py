"""Account deletion: personal data removed, the account a pseudonymous tombstone, its audit events pseudonymised
under a keyed redaction event, its own repositories transferred at once or deleted after a grace period.

The order of delete_account(), in one transaction:
1. Repos: transferred to the named user or org (repo.move, as an admin's transfer), or kept, private, under the
   pseudonym until the grace period ends (`purge_due` deletes them); org repos stay with their org.
2. The user row takes the pseudonym (`deleted-` + random hex, not derived from the name: a guess cannot
   be confirmed), so every event written from here on names the pseudonym only.
3. deactivate_user(): every credential revoked (bastion.lifecycle.service).
4. Personal rows deleted: e-mails, second factors, recovery codes, known devices, web sessions, tokens,
   signing keys and preferences, SSO identities and sessions, org memberships, gated-access requests (the
   e-mail and form answers the user shared), pending invitations to their addresses. The tombstone keeps
   no e-mail, no name, no password.
5. Audit events that name the account (as actor, namespace, target or inside details) are pseudonymised:
   actor name, their address and user agent, the old name and the e-mail addresses wherever they appear.
   A `user.audit_redact` event lists each with its stored hash and the hash of its new content;
   `bastion audit verify` accepts exactly those (bastion.audit.chain._redactions) and counts them.
6. `user.delete` is recorded (by the admin, or by the pseudonym when the user deleted themselves).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, delete, func, or_, select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts import service as accounts
from bastion.accounts.models import KnownDevice, RecoveryCode, User, UserEmail, WebAuthnCredential, WebSession
from bastion.audit import chain
from bastion.audit.actions import AuditAction
from bastion.audit.context import bind_context, current_context
from bastion.audit.models import AuditEvent
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest, Conflict
from bastion.gating.models import AccessRequest
from bastion.hub import Hub
from bastion.lifecycle.models import AccountDeletion
from bastion.lifecycle.service import deactivate_user
from bastion.orgs.models import Organization, OrgInvitation, OrgMember, ResourceGroupMember
from bastion.repos import service as repos
from bastion.repos.models import Repo, RepoRedirect
from bastion.signing import service as signing
from bastion.signing.models import GpgKey, SigningPreference, SshSigningKey
from bastion.sso import service as sso
from bastion.sso.models import InstanceSsoIdentity, SsoExemption, SsoLoginState, SsoSession
from bastion.tokens.models import AccessToken

PSEUDONYM_PREFIX = accounts.DELETED_PREFIX  # no new account or org may start so
REDACTED_EMAIL = "[redacted e-mail]"
BATCH = 500


@dataclass(frozen=True)
class Deletion:
    pseudonym: str
    transferred: list[str]  # repo ids (after the transfer)
    kept: list[str]  # repo ids under the pseudonym, deleted after the grace period
    purge_repos_after: datetime | None
    redacted_events: int

    def as_json(self) -> dict[str, Any]:
        return {"pseudonym": self.pseudonym, "transferred": self.transferred, "kept": self.kept,
                "purgeReposAfter": self.purge_repos_after.isoformat().replace("+00:00", "Z")
                if self.purge_repos_after else None, "redactedEvents": self.redacted_events}


def now() -> datetime:
    """The clock of the grace period (the tests' clock file moves it, as it moves SSO's)."""
    return sso.now()


def is_deleted(user: User) -> bool:
    return user.deleted_at is not None


def delete_account(hub: Hub, session: Session, user: User, *, grace_days: int,
                   transfer_to: str | None = None) -> Deletion:
    """Delete `user` (see the module's docstring for the order). `transfer_to`: a user or org that receives
    every repo of the account now (the caller has authorized that: an instance admin); else they are kept,
    under the pseudonym and private (administrators still see them), for `grace_days`, then deleted."""
    if is_deleted(user):
        raise Conflict("This account is already deleted")
    old_name = user.name
    emails = {e.email_lower for e in user.emails} | ({user.email.lower()} if user.email else set())
    pseudonym = _new_pseudonym(session)
    ctx = current_context()
    # A user deleting themselves: the events of the deletion carry the pseudonym, not their name or address.
    changes: dict[str, Any] = ({"actor_name": pseudonym, "ip": None, "user_agent": None}
                               if ctx.actor_id == user.id else {})
    with bind_context(**changes):
        transferred, kept = _repos(session, user, old_name, pseudonym, transfer_to)
        user.name, user.name_lower = pseudonym, pseudonym.lower()
        accounts.retire_name(session, old_name)  # nobody signs up as the deleted account (repo-jacking)
        session.flush()
        deactivate_user(session, user, reason="account deleted")
        _remove_personal_rows(session, user, emails)
        user.email, user.fullname, user.is_admin = "", "", False
        user.password_hash = user.password_changed_at = user.totp_secret = user.webauthn_handle = None
        user.totp_last_step = None
        user.deleted_at = utcnow()
        session.flush()
        redaction, count = redact_events(session, user.id, old_name, emails, pseudonym)
        purge_after = now() + timedelta(days=grace_days) if kept else None
        session.add(AccountDeletion(user_id=user.id, pseudonym=pseudonym, purge_repos_after=purge_after,
                                    redaction_event_id=redaction.id if redaction is not None else None))
        result = Deletion(pseudonym, transferred, kept, purge_after, count)
        audit.record(session, AuditAction.USER_DELETE, target=("user", pseudonym), namespace=pseudonym,
                     details={"by": "self" if ctx.actor_id == user.id else "admin",
                              "transferredTo": transfer_to if transferred else None,
                              "reposTransferred": len(transferred), "reposKept": len(kept),
                              "purgeReposAfter": result.as_json()["purgeReposAfter"], "redactedEvents": count})
        session.flush()
    return result


def _new_pseudonym(session: Session) -> str:
    while True:
        name = f"{PSEUDONYM_PREFIX}{secrets.token_hex(6)}"
        if session.scalar(select(User.id).where(User.name_lower == name)) is None:
            return name


def _repos(session: Session, user: User, old_name: str, pseudonym: str,
           transfer_to: str | None) -> tuple[list[str], list[str]]:
    owned = own_repos(session, user)
    transferred: list[str] = []
    kept: list[str] = []
    if transfer_to is not None:
        target = repos.namespace_ref(session, transfer_to.strip())
        if target.org is None and target.owner_user_id is None:
            raise BadRequest(f"Unknown user or organization {transfer_to!r} to transfer the repositories to")
        if target.owner_user_id == user.id:
            raise BadRequest("The repositories cannot be transferred to the account being deleted")
        receiver = session.get(User, target.owner_user_id) if target.owner_user_id is not None else None
        if receiver is not None and (not receiver.is_active or receiver.deleted_at is not None):
            raise BadRequest(f"{receiver.name} is not an active account")
        for repo in owned:
            repos.move_repo(session, repo, target, repo.name)  # Conflict when the name is taken there
            transferred.append(f"{repo.type}/{repo.repo_id}")
    else:
        for repo in owned:
            # Kept for the grace period (an admin may still transfer them), out of public view: the person
            # deleted their account, so what they published is withdrawn now, not in a month.
            repo.namespace, repo.namespace_lower = pseudonym, pseudonym.lower()
            repo.private = True
            kept.append(f"{repo.type}/{repo.repo_id}")
    # The old name leads nowhere (it is personal data, and free again): no redirect keeps it.
    session.execute(delete(RepoRedirect).where(RepoRedirect.namespace_lower == old_name.lower()))
    session.flush()
    return transferred, kept


def _remove_personal_rows(session: Session, user: User, emails: set[str]) -> None:
    uid = user.id
    signing.invalidate_user(session, uid)  # verdicts naming the account's keys or addresses: recomputed on read
    # Each org whose member the account was hears of it in its own log (under the pseudonym).
    memberships = select(OrgMember.role, Organization.name).join(Organization, Organization.id == OrgMember.org_id)
    for role, org_name in session.execute(memberships.where(OrgMember.user_id == uid).order_by(Organization.id)):
        audit.record(session, AuditAction.ORG_REMOVE_USER, target=("user", user.name), namespace=org_name,
                     details={"role": role, "accountDeleted": True})
    for model in (UserEmail, WebAuthnCredential, RecoveryCode, KnownDevice, WebSession, GpgKey, SshSigningKey,
                  SigningPreference, InstanceSsoIdentity, SsoSession, SsoExemption, SsoLoginState,
                  ResourceGroupMember, OrgMember, AccessRequest, AccessToken):
        if model is GpgKey:  # its subkeys go with it (ORM cascade)
            for key in session.scalars(select(GpgKey).where(GpgKey.user_id == uid)):
                session.delete(key)
            continue
        session.execute(delete(model).where(model.user_id == uid))  # type: ignore[attr-defined]
    if emails:
        session.execute(delete(OrgInvitation).where(func.lower(OrgInvitation.email).in_(sorted(emails)),
                                                    OrgInvitation.state == "pending"))
    session.expire(user, ["emails"])
    session.flush()


# ---- audit events -------------------------------------------------------------------------------

class _Scrubber:
    """Replaces the deleted account's name (as a whole word, in paths such as `model/alice/x` too) and its
    e-mail addresses in any string, list or mapping."""

    def __init__(self, old_name: str, emails: set[str], pseudonym: str) -> None:
        self.pseudonym = pseudonym
        self.name_re = re.compile(rf"(?<![A-Za-z0-9_.\-]){re.escape(old_name)}(?![A-Za-z0-9_\-]|\.[A-Za-z0-9])",
                                  re.IGNORECASE)
        self.email_re = (re.compile("|".join(re.escape(e) for e in sorted(emails, key=len, reverse=True)),
                                    re.IGNORECASE) if emails else None)

    def text(self, value: str) -> str:
        if self.email_re is not None:
            value = self.email_re.sub(REDACTED_EMAIL, value)
        return self.name_re.sub(self.pseudonym, value)

    def any(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.any(v) for v in value]
        if isinstance(value, dict):
            return {k: self.any(v) for k, v in value.items()}
        return value


def _candidates(session: Session, user_id: int, old_name: str, emails: set[str]) -> Iterator[AuditEvent]:
    """Events that may name the account, in id order, in keyset batches (a superset: the scrubber decides)."""
    needles = [old_name.lower(), *sorted(emails)]
    details = func.lower(cast(AuditEvent.details, Text))
    mentions = [c for n in needles for c in (func.lower(AuditEvent.target_id).contains(n, autoescape=True),
                                             func.lower(AuditEvent.actor_name).contains(n, autoescape=True),
                                             details.contains(n, autoescape=True))]
    where = or_(AuditEvent.actor_id == user_id, func.lower(AuditEvent.namespace) == old_name.lower(), *mentions)
    after = 0
    while True:
        rows = list(session.scalars(select(AuditEvent).where(where, AuditEvent.id > after,
                                                             AuditEvent.purged_by.is_(None))
                                    .order_by(AuditEvent.id).limit(BATCH)))
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].id


def redact_events(session: Session, user_id: int, old_name: str, emails: set[str],
                  pseudonym: str) -> tuple[AuditEvent | None, int]:
    """Pseudonymise every event naming the account; record the keyed redaction event that vouches for each
    (None, 0 when there was nothing to redact). Non-personal fields (action, time, ids, target type, the
    rest of the details) are kept, so the log still says what happened and when."""
    scrub = _Scrubber(old_name, emails, pseudonym)
    changed: list[AuditEvent] = []
    listed: list[list[Any]] = []
    for ev in _candidates(session, user_id, old_name, emails):
        by_user = ev.actor_id == user_id
        # Sign-ins (and failed ones) name their account as target before anyone is the actor: the address and
        # browser there are the person's too. An admin acting on the account keeps theirs.
        about_user = ev.actor_id is None and ev.target_type == "user" and ev.target_id.lower() == old_name.lower()
        before = (ev.actor_name, ev.ip, ev.user_agent, ev.namespace, ev.target_id, ev.details)
        ev.actor_name = pseudonym if by_user else (scrub.text(ev.actor_name) if ev.actor_name else ev.actor_name)
        if by_user or about_user:
            ev.ip, ev.user_agent = None, None
        ev.namespace = scrub.text(ev.namespace) if ev.namespace else ev.namespace
        ev.target_id = scrub.text(ev.target_id)[:300]
        ev.details = scrub.any(ev.details or {})
        if (ev.actor_name, ev.ip, ev.user_agent, ev.namespace, ev.target_id, ev.details) == before:
            continue
        changed.append(ev)
        listed.append([ev.id, ev.hash, chain.link_hash(chain.chain_record(ev))])
    if not changed:
        return None, 0
    session.flush()
    redaction = audit.record(session, AuditAction.USER_AUDIT_REDACT, target=("user", pseudonym), namespace=pseudonym,
                             details={"redacted_count": len(listed), "redacted": listed})
    for ev in changed:
        ev.redacted_by = redaction.id
    session.flush()
    return redaction, len(changed)


# ---- the grace period ---------------------------------------------------------------------------

def purge_due(hub: Hub) -> list[str]:
    """Delete the repos of every deleted account whose grace period is over, one account per transaction;
    the pseudonyms done. Run by the worker's sweeper and `bastion admin purge-deleted-accounts`."""
    done: list[str] = []
    with transaction(hub.sessions, readonly=True) as session:
        due = list(session.scalars(select(AccountDeletion.id).where(
            AccountDeletion.purge_repos_after.is_not(None), AccountDeletion.purge_repos_after <= now(),
            AccountDeletion.repos_purged_at.is_(None)).order_by(AccountDeletion.id)))
    for deletion_id in due:
        with bind_context(via="worker" if current_context().via == "system" else current_context().via), \
                transaction(hub.sessions) as session:
            row = session.get(AccountDeletion, deletion_id)
            if row is None or row.repos_purged_at is not None:
                continue
            deleted = []
            for repo in session.scalars(select(Repo).where(Repo.owner_user_id == row.user_id,
                                                           Repo.owner_org_id.is_(None)).order_by(Repo.id)):
                deleted.append(f"{repo.type}/{repo.repo_id}")
                repos.delete_repo(hub, session, repo)
            row.repos_purged_at = utcnow()
            audit.record(session, AuditAction.USER_REPOS_PURGE, target=("user", row.pseudonym),
                         namespace=row.pseudonym, details={"repos": deleted})
            done.append(row.pseudonym)
    return done


def own_repos(session: Session, user: User) -> list[Repo]:
    """The account's own repositories (not its orgs'): what a deletion transfers or keeps for the grace period."""
    return list(session.scalars(select(Repo).where(Repo.owner_user_id == user.id, Repo.owner_org_id.is_(None))
                                .order_by(Repo.id)))


def deletion_of(session: Session, user: User) -> AccountDeletion | None:
    return session.scalar(select(AccountDeletion).where(AccountDeletion.user_id == user.id))
