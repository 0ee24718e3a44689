"""Account operations: the only writers of users, their e-mails and passwords.

Each function changes state, records its audit event and queues its e-mails in the caller's
transaction; mails leave only when that transaction commits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts import passwords, ratelimit
from bastion.accounts.models import RetiredName, User, UserEmail, WebSession
from bastion.audit.actions import AuditAction
from bastion.authz import Principal, capability
from bastion.db import utcnow
from bastion.errors import AuthenticationRequired, BadRequest, Conflict, Forbidden, NotFound
from bastion.mail import Mailer, Message

# `\Z`, never `$`: Python's `$` also matches before a final newline, and `alice\n` is no new name (it looks like
# `alice`, and only the exact name of a deleted account is retired). The same for e-mail addresses.
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9])){0,95}\Z")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\Z")
RESERVED_NAMES = frozenset({"api", "datasets", "spaces", "models", "settings", "login", "logout", "admin",
                            "new", "organizations", "docs", "static", "oauth", "join", "kernels"})
# A deleted account's row keeps a pseudonym `deleted-<12 hex>` (lifecycle.deletion): a live account or org named
# like one would pass for a deleted account (in audit logs, commits, discussions), so no new name starts so.
DELETED_PREFIX = "deleted-"
MAX_EMAILS = 10
VERIFY_TTL = 48 * 3600
RESET_TTL = 3600
INVITE_TTL = 7 * 24 * 3600


# Names no user or organization may take because they would speak for the instance or its operators
# ("Signed by Bastion", a profile called "security"). Compared without case and without the separators
# '-', '_' and '.', so `Bastion_Instance` and `ad.min` are refused too; any name that starts with the
# instance's name and goes on with one of IMPERSONATION_SUFFIXES imitates it as well (`bastion-team`).
IMPERSONATED_NAMES = frozenset({"bastion", "bastioninstance", "admin", "administrator", "root", "system", "support",
                                "security", "postmaster", "webmaster", "abuse", "noreply"})  # + RFC 2142 mailboxes
IMPERSONATION_SUFFIXES = ("instance", "admin", "administrator", "official", "team", "staff", "bot", "system",
                          "support", "security", "signer", "signing", "key", "server", "hub", "root", "noreply")


def _skeleton(name: str) -> str:
    return re.sub(r"[-_.]", "", name.lower())


def impersonates_instance(name: str) -> bool:
    skeleton = _skeleton(name)
    if skeleton in IMPERSONATED_NAMES:
        return True
    return skeleton.startswith("bastion") and skeleton[len("bastion"):] in IMPERSONATION_SUFFIXES


def validate_namespace_name(name: str) -> None:
    """The one check of a new user or organization name (accounts.create_user, orgs.create_org)."""
    if not NAME_RE.match(name):
        raise BadRequest(f"Invalid name {name!r}: use letters, digits, '-', '_' or '.', at most 96 characters")
    if name.lower() in RESERVED_NAMES or impersonates_instance(name):
        raise BadRequest(f"The name {name!r} is reserved: choose another one")
    if name.lower().startswith(DELETED_PREFIX):
        raise BadRequest(f"The name {name!r} is reserved: names starting with {DELETED_PREFIX!r} are those of "
                         "deleted accounts")


def _validate_email(email: str) -> str:
    email = email.strip()
    if not EMAIL_RE.match(email):
        raise BadRequest(f"Invalid e-mail address {email!r}")
    return email


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.lower().encode()).hexdigest()


def name_retired(session: Session, name: str) -> bool:
    """Whether `name` belonged to a deleted account (no user or organization may take it again)."""
    return session.get(RetiredName, _name_hash(name)) is not None


def retire_name(session: Session, name: str) -> None:
    """Keep `name` (of an account being deleted) from ever being given again."""
    if not name_retired(session, name):
        session.add(RetiredName(name_hash=_name_hash(name)))


def refuse_retired(session: Session, name: str) -> None:
    if name_retired(session, name):
        raise Conflict(f"The name {name!r} belonged to a deleted account and cannot be used again")


def create_user(session: Session, name: str, email: str, fullname: str = "", is_admin: bool = False, *,
                password: str | None = None, email_verified: bool = False,
                min_password_length: int = 10) -> User:
    validate_namespace_name(name)
    email = _validate_email(email)
    if session.scalar(select(User.id).where(User.name_lower == name.lower())) is not None:
        raise Conflict(f"The name {name!r} is already taken")
    refuse_retired(session, name)
    if password is not None:
        passwords.check_policy(password, min_password_length, username=name, email=email)
    if email_verified and _verified_owner(session, email) is not None:
        raise Conflict(f"The e-mail address {email!r} belongs to another account")
    user = User(name=name, name_lower=name.lower(), email=email, fullname=fullname or name, is_admin=is_admin)
    if password is not None:
        user.password_hash = passwords.hash_password(password)
        user.password_changed_at = utcnow()
    user.emails.append(UserEmail(email=email, email_lower=email.lower(), primary=True,
                                 verified_at=utcnow() if email_verified else None))
    session.add(user)
    session.flush()
    audit.record(session, AuditAction.USER_CREATE, target=("user", user.name), namespace=user.name,
                 details={"email": email, "admin": is_admin, "email_verified": email_verified,
                          "password": password is not None})
    return user


def user_by_id(session: Session, user_id: int | None) -> User | None:
    """The account with this id, None when there is none (principals and rows name users by id)."""
    return session.get(User, user_id) if user_id is not None else None


def users_by_ids(session: Session, ids: set[int]) -> dict[int, User]:
    """The accounts among `ids` that exist, by id (audit logs name their current authors)."""
    if not ids:
        return {}
    return {u.id: u for u in session.scalars(select(User).where(User.id.in_(sorted(ids))))}


def get_user_by_name(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name_lower == name.lower()))
    if user is None:
        raise NotFound(f"User {name!r} not found")
    return user


def find_login_user(session: Session, login: str) -> User | None:
    """The active account a sign-in name refers to: a username or a verified e-mail address."""
    login = login.strip().lower()
    if "@" in login:
        user = session.scalar(select(User).join(UserEmail).where(UserEmail.email_lower == login,
                                                                 UserEmail.verified_at.is_not(None)))
    else:
        user = session.scalar(select(User).where(User.name_lower == login))
    return user if user is not None and user.is_active else None


def _verified_owner(session: Session, email: str) -> int | None:
    return session.scalar(select(UserEmail.user_id).where(UserEmail.email_lower == email.lower(),
                                                          UserEmail.verified_at.is_not(None)))


def primary_verified(user: User) -> str | None:
    for row in user.emails:
        if row.primary and row.verified_at is not None:
            return row.email
    return None


def notify(session: Session, mailer: Mailer | None, user: User, subject: str, body: str, *,
           review: str | None = None) -> None:
    """A security notice to the user's primary address, if verified (an unverified one may not be theirs).
    `review`: the settings page (a path) where the change can be seen and undone, linked when the instance
    has a public URL."""
    to = primary_verified(user)
    if mailer is not None and to is not None:
        where = f"\n\nReview it here: {mailer.link(review)}" if review and mailer.public_url else ""
        mailer.queue(session, Message(to=to, subject=f"[Bastion] {subject}",
                                      body=f"Hello {user.name},\n\n{body}{where}\n\nIf this was not you, change "
                                           "your password and review your sessions, e-mail addresses, signing keys "
                                           "and two-factor settings now.\n"))


# ---- sign-up and e-mail verification ---------------------------------------------------------

def make_invite(key: bytes, email: str) -> str:
    return capability.sign(key, "invite", {"email": _validate_email(email).lower()}, INVITE_TTL)


def invited_email(key: bytes, token: str) -> str:
    try:
        return str(capability.verify(key, "invite", token)["email"])
    except Forbidden:
        raise Forbidden("This invitation link is invalid or has expired.") from None


def signup(session: Session, mailer: Mailer, key: bytes, *, mode: str, name: str, email: str, password: str,
           min_password_length: int, invite: str | None = None) -> User:
    if mode == "admins":
        raise Forbidden("Sign-up is closed on this instance: ask an administrator for an account.")
    if mode == "invite":
        if not invite:
            raise Forbidden("Sign-up on this instance needs an invitation link.")
        invited = invited_email(key, invite)
        if invited != email.strip().lower():
            raise Forbidden("This invitation is for another e-mail address.")
        # One invitation, one account: once an account holds the address, the link is spent.
        if session.scalar(select(UserEmail.id).where(UserEmail.email_lower == invited).limit(1)) is not None:
            raise Forbidden("This invitation has already been used. Sign in, or ask for a new invitation.")
    user = create_user(session, name, email, password=password, min_password_length=min_password_length)
    send_verification(session, mailer, key, user.emails[0])
    return user


def _verification_token(key: bytes, row: UserEmail) -> str:
    return capability.sign(key, "email-verify", {"eid": row.id, "email": row.email_lower}, VERIFY_TTL)


def send_verification(session: Session, mailer: Mailer, key: bytes, row: UserEmail) -> None:
    """`key`: the instance key the link's token is signed with (links are the mailer's: mail.Mailer.link)."""
    url = mailer.link(f"/join/verify?token={_verification_token(key, row)}")
    mailer.queue(session, Message(
        to=row.email, subject="[Bastion] Verify your e-mail address",
        body=f"Hello {row.user.name},\n\nconfirm that {row.email} is your address by opening this link "
             f"(valid for 48 hours):\n\n{url}\n\nIf you did not ask for this, ignore this message.\n"))


def verify_email(session: Session, key: bytes, token: str) -> UserEmail:
    try:
        claims = capability.verify(key, "email-verify", token)
    except Forbidden:
        raise Forbidden("This verification link is invalid or has expired.") from None
    row = session.get(UserEmail, claims.get("eid"))
    # A deactivated account verifies nothing: a link sent before (to whoever added the address, maybe an intruder
    # in a stolen session) must not make an address verified -- a password reset's way in -- behind the back of
    # the administrator who deprovisioned the account.
    if row is None or row.email_lower != claims.get("email") or not row.user.is_active:
        raise Forbidden("This verification link is invalid or has expired.")
    if row.verified_at is not None:
        return row
    owner = _verified_owner(session, row.email)
    if owner is not None and owner != row.user_id:
        raise Conflict("This e-mail address is already verified by another account.")
    row.verified_at = utcnow()
    session.flush()
    _invalidate_signatures(session, row.user_id)  # commits claiming this address may now verify
    audit.record(session, AuditAction.USER_EMAIL_VERIFY, target=("user", row.user.name), namespace=row.user.name,
                 details={"email": row.email})
    return row


# Called as hook(session, user_id) when the set of a user's verified e-mails changes, in the same
# transaction. Packages above accounts register here (signing forgets the commit-signature verdicts
# that depended on those addresses) instead of accounts importing them.
verified_emails_changed_hooks: list[Callable[[Session, int], None]] = []


def _invalidate_signatures(session: Session, user_id: int) -> None:
    for hook in verified_emails_changed_hooks:
        hook(session, user_id)


def _email_row(user: User, email_id: int) -> UserEmail:
    for row in user.emails:
        if row.id == email_id:
            return row
    raise NotFound("No such e-mail address on your account.")


def add_email(session: Session, mailer: Mailer, key: bytes, user: User, email: str) -> UserEmail:
    email = _validate_email(email)
    if any(r.email_lower == email.lower() for r in user.emails):
        raise Conflict("This address is already on your account.")
    if len(user.emails) >= MAX_EMAILS:
        raise BadRequest(f"An account can have at most {MAX_EMAILS} e-mail addresses.")
    row = UserEmail(email=email, email_lower=email.lower(), primary=False)
    user.emails.append(row)
    session.flush()
    audit.record(session, AuditAction.USER_EMAIL_ADD, target=("user", user.name), namespace=user.name,
                 details={"email": email})
    send_verification(session, mailer, key, row)
    notify(session, mailer, user, "An e-mail address was added to your account",
           f"the address {email} was added to your Bastion account. Once verified, it can receive password "
           "resets and verify commits signed with your keys.", review="/settings/emails")
    return row


def resend_verification(session: Session, mailer: Mailer, key: bytes, user: User, email_id: int) -> None:
    row = _email_row(user, email_id)
    if row.verified_at is None:
        send_verification(session, mailer, key, row)


def remove_email(session: Session, mailer: Mailer | None, user: User, email_id: int) -> None:
    row = _email_row(user, email_id)
    if row.primary:
        raise BadRequest("The primary address cannot be removed; make another address primary first.")
    # Before the removal: the verdicts to forget are found through the user's verified addresses,
    # this one included (commits it verified, or that vigilant mode flagged, must be re-judged).
    _invalidate_signatures(session, user.id)
    user.emails.remove(row)
    session.flush()
    audit.record(session, AuditAction.USER_EMAIL_REMOVE, target=("user", user.name), namespace=user.name,
                 details={"email": row.email})
    notify(session, mailer, user, "An e-mail address was removed from your account",
           f"the address {row.email} was removed from your Bastion account.", review="/settings/emails")


def make_primary(session: Session, mailer: Mailer, user: User, email_id: int) -> None:
    row = _email_row(user, email_id)
    if row.verified_at is None:
        raise BadRequest("Only a verified address can be primary.")
    old = primary_verified(user)
    for other in user.emails:
        other.primary = other.id == row.id
    user.email = row.email
    session.flush()
    audit.record(session, AuditAction.USER_EMAIL_PRIMARY, target=("user", user.name), namespace=user.name,
                 details={"email": row.email, "previous": old})
    if old and mailer is not None and old != row.email:
        mailer.queue(session, Message(to=old, subject="[Bastion] Your primary e-mail address changed",
                                      body=f"Hello {user.name},\n\nyour primary address is now {row.email}.\n"))


def update_profile(session: Session, user: User, fullname: str) -> None:
    fullname = fullname.strip()
    if not fullname or len(fullname) > 200:
        raise BadRequest("The full name must have between 1 and 200 characters.")
    user.fullname = fullname
    audit.record(session, AuditAction.USER_PROFILE_UPDATE, target=("user", user.name), namespace=user.name,
                 details={"fullname": fullname})


# ---- passwords -----------------------------------------------------------------------------

def _set_password(session: Session, user: User, new_password: str, min_length: int,
                  keep_session_id: int | None) -> None:
    passwords.check_policy(new_password, min_length, username=user.name, email=user.email)
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = utcnow()
    # Whoever knew the old password may hold a session: end every other one.
    end_other_sessions(session, user, keep_session_id)


def end_other_sessions(session: Session, user: User, keep_session_id: int | None) -> int:
    """End every web session of `user` but `keep_session_id` (the one making the change; None: all of
    them) after a credential change: a session opened with the old credentials must not outlive it.
    Access tokens are not sessions and stay valid (docs/architecture.md). Returns how many were ended."""
    query = update(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
    if keep_session_id is not None:
        query = query.where(WebSession.id != keep_session_id)
    return int(session.execute(query.values(revoked_at=utcnow())).rowcount or 0)  # type: ignore[attr-defined]


def change_password(session: Session, mailer: Mailer, user: User, current: str, new_password: str, *,
                    min_length: int, keep_session_id: int | None) -> bool:
    """False when `current` is wrong (counted like a failed sign-in); True once changed."""
    ratelimit.check(session, (ratelimit.LOGIN_PER_ACCOUNT, f"user:{user.id}"))
    ok, _ = passwords.verify_password(user.password_hash, current)
    if not ok:
        ratelimit.hit(session, (ratelimit.LOGIN_PER_ACCOUNT, f"user:{user.id}"))
        audit.record(session, AuditAction.USER_LOGIN_FAILED, target=("user", user.name), namespace=user.name,
                     details={"reason": "wrong current password", "during": "password change"})
        return False
    _set_password(session, user, new_password, min_length, keep_session_id)
    audit.record(session, AuditAction.USER_PASSWORD_CHANGE, target=("user", user.name), namespace=user.name)
    notify(session, mailer, user, "Your password was changed",
           "the password of your Bastion account was just changed; your other sessions were signed out.")
    return True


def _reset_fingerprint(user: User) -> str:
    # Binds a reset link to the current password: once it changes (by this link or otherwise), the
    # link is dead, which makes it single-use without storing it.
    basis = f"{user.id}|{user.password_hash or ''}|{user.password_changed_at}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def request_password_reset(session: Session, mailer: Mailer, key: bytes, email: str, ip: str | None) -> None:
    """Mail a reset link if `email` is a verified address; the caller answers the same either way."""
    # First, before any lookup: an instance that cannot link refuses every address alike (no oracle).
    reset_page = mailer.link("/login/reset")
    email = email.strip().lower()
    ratelimit.check(session, (ratelimit.RESET_PER_IP, ip), (ratelimit.RESET_PER_ACCOUNT, email))
    ratelimit.hit(session, (ratelimit.RESET_PER_IP, ip), (ratelimit.RESET_PER_ACCOUNT, email))
    user = find_login_user(session, email) if EMAIL_RE.match(email) else None
    if user is None:
        return
    token = capability.sign(key, "password-reset", {"uid": user.id, "fp": _reset_fingerprint(user)}, RESET_TTL)
    audit.record(session, AuditAction.USER_PASSWORD_RESET_REQUEST, target=("user", user.name), namespace=user.name)
    mailer.queue(session, Message(
        to=email, subject="[Bastion] Reset your password",
        body=f"Hello {user.name},\n\nsomeone (hopefully you) asked to reset your password. Open this link "
             f"within an hour to choose a new one:\n\n{reset_page}?token={token}\n\n"
             "If you did not ask for this, ignore this message: your password stays as it is.\n"))


def user_for_reset(session: Session, key: bytes, token: str) -> User:
    invalid = Forbidden("This password reset link is invalid, was already used, or has expired.")
    try:
        claims = capability.verify(key, "password-reset", token)
    except Forbidden:
        raise invalid from None
    user = session.get(User, claims.get("uid"))
    if user is None or not user.is_active or claims.get("fp") != _reset_fingerprint(user):
        raise invalid
    return user


def reset_password(session: Session, mailer: Mailer, key: bytes, token: str, new_password: str, *,
                   min_length: int) -> User:
    user = user_for_reset(session, key, token)
    _set_password(session, user, new_password, min_length, keep_session_id=None)
    audit.record(session, AuditAction.USER_PASSWORD_RESET, target=("user", user.name), namespace=user.name)
    notify(session, mailer, user, "Your password was reset",
           "the password of your Bastion account was just reset by e-mail; all sessions were signed out.")
    return user


def acting_user(session: Session, principal: Principal) -> User:
    """The user a request acts as; 401 if it is anonymous or the account is gone."""
    user = user_by_id(session, principal.user_id)
    if user is None:
        raise AuthenticationRequired("Authentication required")
    return user
