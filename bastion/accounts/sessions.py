"""Web sessions: password sign-in, server-side session records, rotation, timeouts, sudo mode.

The cookie carries a random secret; the table stores only its SHA-256, so a database leak does not
hand out live sessions. Every sign-in and privilege change issues a new secret (rotation).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts import passwords, ratelimit
from bastion.accounts.models import KnownDevice, RecoveryCode, User, WebAuthnCredential, WebSession
from bastion.accounts.service import find_login_user, notify
from bastion.audit.actions import AuditAction
from bastion.authz import Principal
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.hub import Hub
from bastion.mail import Mailer

PENDING_TTL = timedelta(minutes=10)  # to enter the second factor after the password
TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often


@dataclass(frozen=True)
class Timeouts:
    idle: timedelta
    absolute: timedelta
    sudo: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Timeouts:
        return cls(idle=timedelta(minutes=settings.session_idle_minutes),
                   absolute=timedelta(hours=settings.session_max_age_hours),
                   sudo=timedelta(minutes=settings.sudo_minutes))


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def has_second_factor(session: Session, user: User) -> bool:
    if user.totp_secret:
        return True
    return session.scalar(select(WebAuthnCredential.id).where(WebAuthnCredential.user_id == user.id).limit(1)) \
        is not None


def authenticate(session: Session, login: str, password: str, ip: str | None) -> User | None:
    """The user whose password this is, or None. Unknown users cost the same argon2 check and are
    counted under the same limits, so neither the answer nor its timing reveals they do not exist.
    """
    login = login.strip().lower()[:320]
    user = find_login_user(session, login) if login else None
    account = f"user:{user.id}" if user is not None else f"login:{login}"
    ratelimit.check(session, (ratelimit.LOGIN_PER_IP, ip), (ratelimit.LOGIN_PER_ACCOUNT, account))
    ok, needs_rehash = passwords.verify_password(user.password_hash if user else None, password)
    if not ok or user is None:
        ratelimit.hit(session, (ratelimit.LOGIN_PER_IP, ip), (ratelimit.LOGIN_PER_ACCOUNT, account))
        target = ("user", user.name) if user is not None else ("login", login or "-")
        audit.record(session, AuditAction.USER_LOGIN_FAILED, target=target,
                     namespace=user.name if user is not None else None, details={"reason": "bad credentials"})
        return None
    if needs_rehash:
        user.password_hash = passwords.hash_password(password)
    return user


def start(session: Session, user: User, *, pending: bool, ip: str | None, user_agent: str | None,
          replaces: str | None = None) -> tuple[WebSession, str]:
    """A new session record and its cookie secret. Any session the browser held before is ended,
    so a secret planted in the browser before sign-in never becomes a signed-in one (fixation).
    """
    if replaces:
        session.execute(update(WebSession).where(WebSession.secret_hash == secret_hash(replaces),
                                                 WebSession.revoked_at.is_(None)).values(revoked_at=utcnow()))
    secret = _new_secret()
    now = utcnow()
    ws = WebSession(user_id=user.id, secret_hash=secret_hash(secret), state="pending" if pending else "active",
                    created_at=now, last_seen_at=now, authenticated_at=now, ip=ip,
                    user_agent=(user_agent or "")[:512] or None, pending={})
    session.add(ws)
    session.flush()
    return ws, secret


def rotate(session: Session, ws: WebSession) -> str:
    """Issue a new secret for the same session (privilege change): the old cookie stops working."""
    secret = _new_secret()
    ws.secret_hash = secret_hash(secret)
    session.flush()
    return secret


def find(session: Session, secret: str, timeouts: Timeouts, *, state: str = "active") -> WebSession | None:
    """The live session with this cookie secret, or None (unknown, revoked, timed out, other state)."""
    if not secret or len(secret) > 128:
        return None
    ws = session.scalar(select(WebSession).where(WebSession.secret_hash == secret_hash(secret)))
    return ws if ws is not None and _is_live(ws, timeouts, state) else None


def _is_live(ws: WebSession, timeouts: Timeouts, state: str = "active") -> bool:
    if ws.revoked_at is not None or ws.state != state:
        return False
    now = utcnow()
    absolute = PENDING_TTL if state == "pending" else timeouts.absolute
    return now - ws.created_at <= absolute and now - ws.last_seen_at <= timeouts.idle


def principal_for_cookie(session: Session, secret: str, timeouts: Timeouts) -> Principal | None:
    ws = find(session, secret, timeouts)
    if ws is None:
        return None
    user = session.get(User, ws.user_id)
    if user is None or not user.is_active:
        return None
    now = utcnow()
    if now - ws.last_seen_at > TOUCH_EVERY:
        ws.last_seen_at = now
    return Principal(method="session", user_id=user.id, username=user.name, is_admin=user.is_admin,
                     session_id=ws.id, recently_authenticated=now - ws.authenticated_at <= timeouts.sudo)


def principal_for_session_id(session: Session, session_id: int, timeouts: Timeouts) -> Principal | None:
    """The signed-in user of web session `session_id` as it is now, None once it was signed out, revoked
    or timed out: what a capability minted in a browser re-checks on every use. A read: such uses are
    not browser activity and do not keep the session alive."""
    ws = session.get(WebSession, session_id)
    if ws is None or not _is_live(ws, timeouts):
        return None
    user = session.get(User, ws.user_id)
    if user is None or not user.is_active:
        return None
    return Principal(method="session", user_id=user.id, username=user.name, is_admin=user.is_admin, session_id=ws.id)


def complete_login(session: Session, mailer: Mailer | None, ws: WebSession, user: User, *, method: str,
                   device: str | None) -> tuple[str, str]:
    """Turn a (pending or new) session into a signed-in one. Returns (session secret, device id):
    a fresh secret (rotation at sign-in) and the browser's device id to keep in its cookie.
    """
    now = utcnow()
    ws.state = "active"
    ws.authenticated_at = now
    ws.last_seen_at = now
    ws.pending = {}
    secret = rotate(session, ws)
    device = device if device and re.fullmatch(r"[A-Za-z0-9_-]{20,64}", device) else secrets.token_urlsafe(24)
    dev_hash = secret_hash(device)
    known = session.scalar(select(KnownDevice).where(KnownDevice.user_id == user.id,
                                                     KnownDevice.device_hash == dev_hash))
    new_device = known is None
    if known is None:
        first_ever = session.scalar(select(KnownDevice.id).where(KnownDevice.user_id == user.id).limit(1)) is None
        session.add(KnownDevice(user_id=user.id, device_hash=dev_hash, first_seen_at=now, last_seen_at=now))
        if not first_ever:
            notify(session, mailer, user, "New sign-in to your account",
                   f"your account was signed in to from a new device.\n\nWhen: {now:%Y-%m-%d %H:%M UTC}\n"
                   f"IP address: {ws.ip or 'unknown'}\nBrowser: {device_label(ws.user_agent)}")
    else:
        known.last_seen_at = now
    session.flush()
    audit.record(session, AuditAction.USER_LOGIN, target=("user", user.name), namespace=user.name,
                 details={"method": method, "session": ws.id, "new_device": new_device})
    return secret, device


def reauthenticate(session: Session, ws: WebSession, user: User, password: str) -> bool:
    """Sudo mode: a correct password now allows changing second factors for Timeouts.sudo."""
    account = f"user:{user.id}"
    ratelimit.check(session, (ratelimit.LOGIN_PER_ACCOUNT, account))
    ok, _ = passwords.verify_password(user.password_hash, password)
    if not ok:
        ratelimit.hit(session, (ratelimit.LOGIN_PER_ACCOUNT, account))
        audit.record(session, AuditAction.USER_LOGIN_FAILED, target=("user", user.name), namespace=user.name,
                     details={"reason": "bad credentials", "during": "sudo"})
        return False
    ws.authenticated_at = utcnow()
    audit.record(session, AuditAction.USER_SUDO, target=("user", user.name), namespace=user.name,
                 details={"session": ws.id})
    return True


def end(session: Session, ws: WebSession, user: User) -> None:
    ws.revoked_at = utcnow()
    audit.record(session, AuditAction.USER_LOGOUT, target=("user", user.name), namespace=user.name,
                 details={"session": ws.id})


def active_sessions(session: Session, user: User, timeouts: Timeouts) -> list[WebSession]:
    now = utcnow()
    rows = session.scalars(select(WebSession).where(WebSession.user_id == user.id, WebSession.state == "active",
                                                    WebSession.revoked_at.is_(None))
                           .order_by(WebSession.last_seen_at.desc()))
    return [ws for ws in rows if now - ws.created_at <= timeouts.absolute and now - ws.last_seen_at <= timeouts.idle]


def revoke(session: Session, user: User, session_id: int) -> None:
    ws = session.get(WebSession, session_id)
    # Another user's session id answers like a missing one.
    if ws is None or ws.user_id != user.id or ws.revoked_at is not None:
        return
    ws.revoked_at = utcnow()
    audit.record(session, AuditAction.USER_SESSION_REVOKE, target=("user", user.name), namespace=user.name,
                 details={"session": ws.id})


def revoke_others(session: Session, user: User, keep_session_id: int | None) -> int:
    query = update(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
    if keep_session_id is not None:
        query = query.where(WebSession.id != keep_session_id)
    count = session.execute(query.values(revoked_at=utcnow())).rowcount  # type: ignore[attr-defined]
    audit.record(session, AuditAction.USER_SESSION_REVOKE, target=("user", user.name), namespace=user.name,
                 details={"all_except": keep_session_id, "count": count})
    return int(count or 0)


def recovery_codes_left(session: Session, user: User) -> int:
    return len(list(session.scalars(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id,
                                                                  RecoveryCode.used_at.is_(None)))))


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"),
             ("Chromium/", "Chromium"), ("Safari/", "Safari"))
_SYSTEMS = (("Windows", "Windows"), ("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"),
            ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))


def device_label(user_agent: str | None) -> str:
    """"Chrome on Linux" from a User-Agent, for people reading their sessions list."""
    ua = user_agent or ""
    browser = next((name for marker, name in _BROWSERS if marker in ua), None)
    system = next((name for marker, name in _SYSTEMS if marker in ua), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or (ua[:60] or "Unknown device")


def last_seen_text(when: datetime) -> str:
    seconds = int((utcnow() - when).total_seconds())
    if seconds < 120:
        return "just now"
    if seconds < 7200:
        return f"{seconds // 60} minutes ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} hours ago"
    return f"{seconds // 86400} days ago"


def cookie_principal(hub: Hub, cookie: str) -> Principal | None:
    """The session cookie authenticator `bastion.api.auth` calls (installed by the app)."""
    with transaction(hub.sessions) as session:
        return principal_for_cookie(session, cookie, Timeouts.from_settings(hub.settings))


def session_id_principal(hub: Hub, session: Session, session_id: int) -> Principal | None:
    return principal_for_session_id(session, session_id, Timeouts.from_settings(hub.settings))
