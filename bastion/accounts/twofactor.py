"""Second factors: TOTP (RFC 6238), single-use recovery codes, WebAuthn security keys and passkeys.

Codes are checked in constant time; a TOTP code is accepted once (the last used time step is
stored), recovery codes are stored only as hashes, and every failure counts toward rate limits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import secrets
import time
from dataclasses import dataclass

import pyotp
import qrcode
import qrcode.image.svg
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidJSONStructure, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from bastion import audit
from bastion.accounts import ratelimit
from bastion.accounts.models import RecoveryCode, User, WebAuthnCredential
from bastion.accounts.service import end_other_sessions, notify
from bastion.audit.actions import AuditAction
from bastion.db import utcnow
from bastion.errors import BadRequest, NotFound
from bastion.mail import Mailer
from bastion.secretbox import SealedValueError, SecretBox

log = logging.getLogger("bastion.accounts")

TOTP_PERIOD = 30
TOTP_WINDOW = 1  # accept the previous and the next 30 s step too (clock drift)
RECOVERY_CODE_COUNT = 10
ISSUER = "Bastion"


# ---- TOTP ----------------------------------------------------------------------------------

def new_totp_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, RFC 4226's recommended key length


def totp_box(instance_key: bytes) -> SecretBox:
    """How TOTP keys are sealed in the database (and in a web session's pending enrollment)."""
    return SecretBox(instance_key, "totp")


def _totp_context(user: User) -> str:
    return f"user:{user.id}"


def stored_totp_secret(box: SecretBox, user: User) -> str | None:
    """The user's TOTP key, opened; None when there is none or it does not open (fail closed, logged)."""
    value = user.totp_secret
    if not value:
        return None
    if not SecretBox.is_sealed(value):
        return value  # stored before keys were sealed: sealed at its next successful use
    try:
        return box.open(value, _totp_context(user))
    except SealedValueError:
        log.error("the TOTP key of %s does not open with this instance key (was the data dir's secret_key or "
                  "BASTION_SECRET_KEY changed?); the user must sign in with a recovery code or security key",
                  user.name)
        return None


def provisioning_uri(secret: str, username: str, issuer: str = ISSUER) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def qr_data_uri(text: str) -> str:
    """An SVG QR code as a data: URI, so the secret never travels in a second request."""
    img = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buf = io.BytesIO()
    img.save(buf)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step within ±TOTP_WINDOW whose code equals `code`, compared in constant time."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    step = int((time.time() if now is None else now) // TOTP_PERIOD)
    found = None
    for candidate in range(step - TOTP_WINDOW, step + TOTP_WINDOW + 1):
        # No early exit: every candidate is computed and compared.
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            found = candidate
    return found


def enable_totp(session: Session, mailer: Mailer | None, box: SecretBox, user: User, secret: str,
                code: str, *, keep_session_id: int | None = None) -> list[str] | None:
    """Confirm enrollment with a code from the app. Returns new recovery codes when the user had none.
    Every web session but `keep_session_id` (the enrolling one) is ended: it was opened without this factor."""
    step = matching_step(secret, code)
    if step is None:
        raise BadRequest("That code is not valid for this key. Check the time on your device and try again.")
    user.totp_secret = box.seal(secret, _totp_context(user))
    user.totp_last_step = step
    ended = end_other_sessions(session, user, keep_session_id)
    audit.record(session, AuditAction.USER_2FA_TOTP_ADD, target=("user", user.name), namespace=user.name,
                 details={"sessions_ended": ended})
    notify(session, mailer, user, "Two-factor authentication added",
           "an authenticator app (TOTP) was added as a second factor to your account; your other sessions "
           "were signed out (access tokens still work).", review="/settings/two-factor")
    return _first_recovery_codes(session, user)


def verify_totp(session: Session, box: SecretBox, user: User, code: str, ip: str | None, *,
                now: float | None = None) -> bool:
    """A sign-in code: rate limited per account and IP; a code (its time step) is accepted only once."""
    limits = ((ratelimit.TWO_FACTOR_PER_IP, ip), (ratelimit.TWO_FACTOR_PER_ACCOUNT, f"user:{user.id}"))
    ratelimit.check(session, *limits)
    secret = stored_totp_secret(box, user)
    step = matching_step(secret, code, now) if secret else None
    if step is not None and _claim_totp_step(session, user, step):
        if not SecretBox.is_sealed(user.totp_secret or ""):
            user.totp_secret = box.seal(secret or "", _totp_context(user))
        return True
    ratelimit.hit(session, *limits)
    audit.record(session, AuditAction.USER_2FA_FAILED, target=("user", user.name), namespace=user.name,
                 details={"factor": "totp", "reason": "replayed code" if step is not None else "wrong code"})
    return False


def _claim_totp_step(session: Session, user: User, step: int) -> bool:
    """Spend a time step: a conditional update, so of two concurrent sign-ins with one code (on any
    database, PostgreSQL's READ COMMITTED included) exactly one wins."""
    claimed = session.execute(
        update(User).where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    user.totp_last_step = step
    return True


def disable_totp(session: Session, mailer: Mailer | None, user: User) -> None:
    if not user.totp_secret:
        raise NotFound("No authenticator app is set up.")
    user.totp_secret = None
    user.totp_last_step = None
    audit.record(session, AuditAction.USER_2FA_TOTP_REMOVE, target=("user", user.name), namespace=user.name)
    _drop_recovery_if_no_factor(session, user)
    notify(session, mailer, user, "Two-factor authentication removed",
           "the authenticator app (TOTP) was removed from your account.")


# ---- recovery codes ------------------------------------------------------------------------

def _code_hash(code: str) -> str:
    # Codes carry 80 random bits, so a fast hash cannot be reversed by guessing; normalise first so
    # spacing and case typed by a person do not matter.
    return hashlib.sha256("".join(code.split()).replace("-", "").lower().encode()).hexdigest()


def generate_recovery_codes(session: Session, user: User) -> list[str]:
    """Replace the user's codes with ten new ones; the plain codes exist only in the return value."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 16 chars, 80 bits
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}-{raw[12:]}")
        session.add(RecoveryCode(user_id=user.id, code_hash=_code_hash(raw)))
    session.flush()
    audit.record(session, AuditAction.USER_2FA_RECOVERY_GENERATE, target=("user", user.name), namespace=user.name,
                 details={"count": RECOVERY_CODE_COUNT})
    return codes


def _first_recovery_codes(session: Session, user: User) -> list[str] | None:
    exists = session.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id).limit(1))
    return None if exists is not None else generate_recovery_codes(session, user)


def use_recovery_code(session: Session, mailer: Mailer | None, user: User, code: str, ip: str | None) -> bool:
    limits = ((ratelimit.TWO_FACTOR_PER_IP, ip), (ratelimit.RECOVERY_PER_ACCOUNT, f"user:{user.id}"))
    ratelimit.check(session, *limits)
    wanted = _code_hash(code)
    match = None
    for row in session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                                          RecoveryCode.used_at.is_(None))):
        if hmac.compare_digest(row.code_hash, wanted):
            match = row
    if match is None:
        ratelimit.hit(session, *limits)
        audit.record(session, AuditAction.USER_2FA_FAILED, target=("user", user.name), namespace=user.name,
                     details={"factor": "recovery_code"})
        return False
    # Spent by a conditional update: of two concurrent uses of one code exactly one wins.
    spent = session.execute(update(RecoveryCode).where(RecoveryCode.id == match.id, RecoveryCode.used_at.is_(None))
                            .values(used_at=utcnow()).execution_options(synchronize_session=False))
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        ratelimit.hit(session, *limits)
        audit.record(session, AuditAction.USER_2FA_FAILED, target=("user", user.name), namespace=user.name,
                     details={"factor": "recovery_code", "reason": "code already used"})
        return False
    left = session.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id,
                                                        RecoveryCode.used_at.is_(None), RecoveryCode.id != match.id)
                          .limit(1))
    audit.record(session, AuditAction.USER_2FA_RECOVERY_USE, target=("user", user.name), namespace=user.name,
                 details={"code_id": match.id})
    notify(session, mailer, user, "A recovery code was used",
           "one of your two-factor recovery codes was just used to sign in. Each code works only once"
           + ("." if left is not None else "; that was the last one, so generate new codes in your settings."))
    return True


def _drop_recovery_if_no_factor(session: Session, user: User) -> None:
    # Removing the last factor clears every registration, recovery codes included (as the Hub does).
    session.flush()
    has_keys = session.scalar(select(WebAuthnCredential.id).where(WebAuthnCredential.user_id == user.id).limit(1))
    if not user.totp_secret and has_keys is None:
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


# ---- WebAuthn ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RelyingParty:
    """Who the browser talks to: rp_id is the host name, origin the exact scheme://host[:port]."""

    id: str
    name: str
    origin: str


def _handle(user: User) -> bytes:
    if not user.webauthn_handle:
        user.webauthn_handle = bytes_to_base64url(secrets.token_bytes(32))
    return base64url_to_bytes(user.webauthn_handle)


def credentials(session: Session, user: User) -> list[WebAuthnCredential]:
    return list(session.scalars(select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id)
                                .order_by(WebAuthnCredential.id)))


def registration_options(session: Session, user: User, rp: RelyingParty) -> tuple[str, str]:
    """(options JSON for navigator.credentials.create, challenge to keep server-side)."""
    opts = generate_registration_options(
        rp_id=rp.id, rp_name=rp.name, user_name=user.name, user_id=_handle(user), user_display_name=user.fullname,
        exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.credential_id))
                             for c in credentials(session, user)],
        # Passkeys welcome, plain security keys too.
        authenticator_selection=AuthenticatorSelectionCriteria(resident_key=ResidentKeyRequirement.PREFERRED,
                                                               user_verification=UserVerificationRequirement.PREFERRED),
    )
    return options_to_json(opts), bytes_to_base64url(opts.challenge)


def register_credential(session: Session, mailer: Mailer | None, user: User, rp: RelyingParty, *,
                        label: str, credential_json: str, challenge: str | None,
                        keep_session_id: int | None = None) -> list[str] | None:
    """Verify an attestation and store the key. Returns new recovery codes when the user had none.
    Every web session but `keep_session_id` (the enrolling one) is ended, as for an authenticator app."""
    label = label.strip()[:64] or "Security key"
    if not challenge:
        raise BadRequest("This registration has expired; start again.")
    try:
        verified = verify_registration_response(credential=credential_json,
                                                expected_challenge=base64url_to_bytes(challenge),
                                                expected_rp_id=rp.id, expected_origin=rp.origin)
    except (InvalidRegistrationResponse, InvalidJSONStructure, ValueError) as exc:
        raise BadRequest(f"The security key could not be registered: {exc}") from None
    cred_id = bytes_to_base64url(verified.credential_id)
    if session.scalar(select(WebAuthnCredential.id).where(WebAuthnCredential.credential_id == cred_id)):
        raise BadRequest("This security key is already registered.")
    try:
        transports = [str(t) for t in json.loads(credential_json).get("response", {}).get("transports", [])][:8]
    except (ValueError, AttributeError):
        transports = []
    session.add(WebAuthnCredential(user_id=user.id, label=label, credential_id=cred_id,
                                   public_key=verified.credential_public_key, sign_count=verified.sign_count,
                                   transports=transports))
    session.flush()
    ended = end_other_sessions(session, user, keep_session_id)
    audit.record(session, AuditAction.USER_2FA_WEBAUTHN_ADD, target=("user", user.name), namespace=user.name,
                 details={"label": label, "credential": cred_id[:16], "sessions_ended": ended})
    notify(session, mailer, user, "Security key added",
           f"the security key or passkey {label!r} was added as a second factor to your account; your other "
           "sessions were signed out (access tokens still work).", review="/settings/two-factor")
    return _first_recovery_codes(session, user)


def authentication_options(session: Session, user: User, rp: RelyingParty) -> tuple[str, str] | None:
    creds = credentials(session, user)
    if not creds:
        return None
    opts = generate_authentication_options(
        rp_id=rp.id, user_verification=UserVerificationRequirement.PREFERRED,
        allow_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.credential_id)) for c in creds])
    return options_to_json(opts), bytes_to_base64url(opts.challenge)


def verify_assertion(session: Session, user: User, rp: RelyingParty, *, credential_json: str,
                     challenge: str | None, ip: str | None) -> bool:
    limits = ((ratelimit.TWO_FACTOR_PER_IP, ip), (ratelimit.TWO_FACTOR_PER_ACCOUNT, f"user:{user.id}"))
    ratelimit.check(session, *limits)
    reason = "unknown credential"
    try:
        cred_id = str(json.loads(credential_json).get("id", ""))
    except (ValueError, AttributeError):
        cred_id = ""
    cred = session.scalar(select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id,
                                                           WebAuthnCredential.credential_id == cred_id))
    if cred is not None and challenge:
        try:
            verified = verify_authentication_response(
                credential=credential_json, expected_challenge=base64url_to_bytes(challenge), expected_rp_id=rp.id,
                expected_origin=rp.origin, credential_public_key=cred.public_key,
                credential_current_sign_count=cred.sign_count)
        except (InvalidAuthenticationResponse, InvalidJSONStructure, ValueError) as exc:
            reason = str(exc)[:200]
        else:
            cred.sign_count = verified.new_sign_count
            cred.last_used_at = utcnow()
            return True
    ratelimit.hit(session, *limits)
    audit.record(session, AuditAction.USER_2FA_FAILED, target=("user", user.name), namespace=user.name,
                 details={"factor": "webauthn", "reason": reason})
    return False


def remove_credential(session: Session, mailer: Mailer | None, user: User, credential_id: int) -> None:
    cred = session.get(WebAuthnCredential, credential_id)
    if cred is None or cred.user_id != user.id:
        raise NotFound("No such security key.")
    session.delete(cred)
    audit.record(session, AuditAction.USER_2FA_WEBAUTHN_REMOVE, target=("user", user.name), namespace=user.name,
                 details={"label": cred.label, "credential": cred.credential_id[:16]})
    _drop_recovery_if_no_factor(session, user)
    notify(session, mailer, user, "Security key removed",
           f"the security key or passkey {cred.label!r} was removed from your account.")
