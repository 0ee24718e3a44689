"""Account services on a real (SQLite) database: TOTP replay, rate limits, session rotation and
timeouts, no user enumeration, recovery codes, password policy and reset links, and the audit trail.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa

from bastion.accounts import passwords, ratelimit, sessions, twofactor
from bastion.accounts import service as accounts
from bastion.accounts.models import RecoveryCode, User, WebSession
from bastion.accounts.ratelimit import TooManyAttempts
from bastion.audit.models import AuditEvent
from bastion.authz import Permission, Principal, authorize
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest, Forbidden
from bastion.hub import Hub
from bastion.mail import Mailer, Message
from bastion.tokens import service as tokens
from tests.accounts.fixtures import away_from_totp_step_edge

PASSWORD = "violet-harbor-lantern-42"
BOX = twofactor.totp_box(b"an instance key for these tests")


class RecordingMailer(Mailer):
    """A Mailer whose transport is a list: what would have been sent after commit."""

    def __init__(self) -> None:
        super().__init__(None, "test@localhost", public_url="http://localhost")
        self.sent: list[Message] = []

    def send_later(self, message: Message):  # type: ignore[no-untyped-def]
        self.sent.append(message)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub.open(Settings(data_dir=tmp_path))
    yield h
    h.close()


@pytest.fixture
def mailer() -> RecordingMailer:
    return RecordingMailer()


def _user(hub: Hub, name: str = "alice", password: str | None = PASSWORD) -> int:
    with transaction(hub.sessions) as s:
        return accounts.create_user(s, name, f"{name}@example.com", password=password, email_verified=True).id


def _actions(hub: Hub) -> list[str]:
    with transaction(hub.sessions) as s:
        return list(s.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


TIMEOUTS = sessions.Timeouts(idle=timedelta(hours=1), absolute=timedelta(days=1), sudo=timedelta(minutes=15))


# ---- TOTP ----------------------------------------------------------------------------------

def test_totp_code_is_single_use_and_window_is_one_step(hub: Hub, mailer: RecordingMailer) -> None:
    uid = _user(hub)
    secret = twofactor.new_totp_secret()
    totp = pyotp.TOTP(secret)
    away_from_totp_step_edge()  # enrollment and `now` below must fall in the same step
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        codes = twofactor.enable_totp(s, mailer, BOX, user, secret, totp.now())
    assert codes is not None and len(codes) == 10
    now = time.time()
    # A well-formed code that is wrong for every step in reach, submitted while the next step is still
    # unspent: refused for being wrong, not for being replayed (a check that let any code through would
    # be caught here, not only by the spent-step rule).
    rng = random.Random(74)
    wrong = next(c for c in (f"{rng.randrange(10**6):06d}" for _ in range(100))
                 if c not in {totp.at(now + 30 * k) for k in range(-2, 4)})
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        assert not twofactor.verify_totp(s, BOX, user, wrong, "10.0.0.1", now=now + 30)
        # The enrollment code is spent: it cannot sign in.
        assert not twofactor.verify_totp(s, BOX, user, totp.at(now), "10.0.0.1", now=now)
        # The next step's code is inside the ±1 window and works once.
        assert twofactor.verify_totp(s, BOX, user, totp.at(now + 30), "10.0.0.1", now=now)
        assert not twofactor.verify_totp(s, BOX, user, totp.at(now + 30), "10.0.0.1", now=now)
        # Older steps are never accepted after a newer one, and two steps ahead is outside the window.
        assert not twofactor.verify_totp(s, BOX, user, totp.at(now - 30), "10.0.0.1", now=now)
        assert not twofactor.verify_totp(s, BOX, user, totp.at(now + 60), "10.0.0.1", now=now)
        assert not twofactor.verify_totp(s, BOX, user, "12345", "10.0.0.1", now=now)
    actions = _actions(hub)
    assert actions.count("user.2fa.failed") == 6
    assert "user.2fa.totp_add" in actions and "user.2fa.recovery_codes_generate" in actions
    assert [m.subject for m in mailer.sent] == ["[Bastion] Two-factor authentication added"]


def test_totp_enrollment_needs_a_valid_code(hub: Hub, mailer: RecordingMailer) -> None:
    uid = _user(hub)
    secret = twofactor.new_totp_secret()
    with pytest.raises(BadRequest), transaction(hub.sessions) as s:
        twofactor.enable_totp(s, mailer, BOX, s.get(User, uid), secret, "000000x")
    # Well-formed but wrong (for every step around now): refused too.
    rng, totp, now = random.Random(75), pyotp.TOTP(secret), time.time()
    wrong = next(c for c in (f"{rng.randrange(10**6):06d}" for _ in range(100))
                 if c not in {totp.at(now + 30 * k) for k in range(-2, 3)})
    with pytest.raises(BadRequest), transaction(hub.sessions) as s:
        twofactor.enable_totp(s, mailer, BOX, s.get(User, uid), secret, wrong)
    with transaction(hub.sessions) as s:
        assert s.get(User, uid).totp_secret is None
    assert mailer.sent == []  # queued mail of a rolled-back transaction is dropped


def test_totp_key_is_sealed_at_rest_bound_to_its_user_and_instance_key(hub: Hub, mailer: RecordingMailer) -> None:
    uid, other = _user(hub), _user(hub, "mallory")
    secret = twofactor.new_totp_secret()
    totp = pyotp.TOTP(secret)
    with transaction(hub.sessions) as s:
        twofactor.enable_totp(s, mailer, BOX, s.get(User, uid), secret, totp.now())
    now = time.time()
    with transaction(hub.sessions) as s:
        alice, mallory = s.get(User, uid), s.get(User, other)
        stored = alice.totp_secret
        assert stored.startswith("sb1:") and secret not in stored
        assert twofactor.stored_totp_secret(BOX, alice) == secret
        # Another instance key opens nothing: no code is accepted (and nothing crashes).
        assert not twofactor.verify_totp(s, twofactor.totp_box(b"some other key"), alice, totp.at(now + 30), None,
                                         now=now)
        # The sealed value copied onto another account does not open there.
        mallory.totp_secret = stored
        assert twofactor.stored_totp_secret(BOX, mallory) is None
        assert not twofactor.verify_totp(s, BOX, mallory, totp.at(now + 30), None, now=now)


def test_plaintext_totp_key_from_before_sealing_works_and_is_sealed_at_use(hub: Hub) -> None:
    uid = _user(hub)
    secret = twofactor.new_totp_secret()
    with transaction(hub.sessions) as s:
        s.get(User, uid).totp_secret = secret
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        assert twofactor.verify_totp(s, BOX, user, pyotp.TOTP(secret).now(), None)
        assert user.totp_secret.startswith("sb1:") and twofactor.stored_totp_secret(BOX, user) == secret


# ---- recovery codes ------------------------------------------------------------------------

def test_recovery_codes_are_hashed_single_use_and_regenerating_invalidates(hub: Hub, mailer: RecordingMailer) -> None:
    uid = _user(hub)
    with transaction(hub.sessions) as s:
        codes = twofactor.generate_recovery_codes(s, s.get(User, uid))
    with transaction(hub.sessions) as s:
        stored = list(s.scalars(sa.select(RecoveryCode.code_hash)))
    assert len(stored) == 10 and not {c.replace("-", "") for c in codes} & set(stored)
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        assert twofactor.use_recovery_code(s, mailer, user, codes[0].upper(), None)  # case and dashes don't matter
        assert not twofactor.use_recovery_code(s, mailer, user, codes[0], None)
    with transaction(hub.sessions) as s:
        fresh = twofactor.generate_recovery_codes(s, s.get(User, uid))
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        assert not twofactor.use_recovery_code(s, mailer, user, codes[1], None)
        assert twofactor.use_recovery_code(s, mailer, user, fresh[1], None)
    assert [m.subject for m in mailer.sent].count("[Bastion] A recovery code was used") == 2


# ---- rate limits and lockout ---------------------------------------------------------------

def test_login_lockout_per_account_says_when_and_spares_api_tokens(hub: Hub) -> None:
    uid = _user(hub)
    with transaction(hub.sessions) as s:
        secret = tokens.create_token(s, s.get(User, uid), "ci", "read").secret
    for i in range(ratelimit.LOGIN_PER_ACCOUNT.attempts):
        with transaction(hub.sessions) as s:
            assert sessions.authenticate(s, "alice", f"wrong-{i}", f"10.0.0.{i}") is None
    # Now even the right password is refused, with a time to wait, from any IP address.
    with pytest.raises(TooManyAttempts) as caught, transaction(hub.sessions) as s:
        sessions.authenticate(s, "alice", PASSWORD, "10.9.9.9")
    assert "Try again in 15 minutes" in caught.value.message
    assert caught.value.status == 429 and 890 <= int(caught.value.headers["Retry-After"]) <= 900
    # API tokens never consult the limiter: the account keeps working from scripts.
    with transaction(hub.sessions) as s:
        assert tokens.authenticate(s, secret, "10.9.9.9", "test").user_id == uid
    # Other accounts are unaffected.
    _user(hub, "bob")
    with transaction(hub.sessions) as s:
        assert sessions.authenticate(s, "bob", PASSWORD, "10.9.9.9") is not None


def test_login_limit_per_ip_covers_many_accounts(hub: Hub) -> None:
    _user(hub)
    for i in range(ratelimit.LOGIN_PER_IP.attempts):
        with transaction(hub.sessions) as s:
            assert sessions.authenticate(s, f"nobody{i}", "x", "10.1.1.1") is None
    with pytest.raises(TooManyAttempts), transaction(hub.sessions) as s:
        sessions.authenticate(s, "alice", PASSWORD, "10.1.1.1")
    with transaction(hub.sessions) as s:
        assert sessions.authenticate(s, "alice", PASSWORD, "10.1.1.2") is not None


def test_window_slides(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        for _ in range(3):
            ratelimit.hit(s, (ratelimit.RESET_PER_ACCOUNT, "a@example.com"))
        with pytest.raises(TooManyAttempts):
            ratelimit.check(s, (ratelimit.RESET_PER_ACCOUNT, "a@example.com"))
        # Age the hits past the window: the limit lifts by itself.
        s.execute(sa.update(ratelimit.RateLimitHit).values(at=utcnow() - timedelta(minutes=61)))
        ratelimit.check(s, (ratelimit.RESET_PER_ACCOUNT, "a@example.com"))


def test_totp_attempts_are_limited(hub: Hub, mailer: RecordingMailer) -> None:
    uid = _user(hub)
    secret = twofactor.new_totp_secret()
    with transaction(hub.sessions) as s:
        twofactor.enable_totp(s, mailer, BOX, s.get(User, uid), secret, pyotp.TOTP(secret).now())
    for _ in range(ratelimit.TWO_FACTOR_PER_ACCOUNT.attempts):
        with transaction(hub.sessions) as s:
            assert not twofactor.verify_totp(s, BOX, s.get(User, uid), "000000", None)
    with pytest.raises(TooManyAttempts), transaction(hub.sessions) as s:
        twofactor.verify_totp(s, BOX, s.get(User, uid), pyotp.TOTP(secret).at(time.time() + 30), None)


# ---- no enumeration ------------------------------------------------------------------------

def test_unknown_user_and_wrong_password_look_the_same(hub: Hub) -> None:
    _user(hub)

    def timed(login: str) -> float:
        start = time.perf_counter()
        with transaction(hub.sessions) as s:
            assert sessions.authenticate(s, login, "not-the-password", "10.2.2.2") is None
        return time.perf_counter() - start

    known = [timed("alice") for _ in range(4)]
    unknown = [timed("no-such-user") for _ in range(4)]
    # Both cost one argon2 verification: same order of time (a skipped hash would be ~100x faster).
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (known, unknown)
    with transaction(hub.sessions) as s:
        rows = list(s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.login_failed")))
    assert {r.target_type for r in rows} == {"user", "login"}


def test_password_reset_request_is_silent_about_unknown_addresses(hub: Hub, mailer: RecordingMailer) -> None:
    _user(hub)
    with transaction(hub.sessions) as s:
        assert accounts.request_password_reset(s, mailer, b"k" * 32, "nobody@example.com", "10.3.3.3") is None
        assert accounts.request_password_reset(s, mailer, b"k" * 32, "alice@example.com", "10.3.3.3") is None
    assert [m.to for m in mailer.sent] == ["alice@example.com"]


# ---- sessions ------------------------------------------------------------------------------

def test_session_rotates_at_login_and_privilege_change(hub: Hub, mailer: RecordingMailer) -> None:
    uid = _user(hub)
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        planted, planted_secret = sessions.start(s, user, pending=False, ip=None, user_agent=None)
        ws, pending_secret = sessions.start(s, user, pending=True, ip="10.0.0.1", user_agent="Chrome/1 Linux",
                                            replaces=planted_secret)
        assert sessions.principal_for_cookie(s, pending_secret, TIMEOUTS) is None  # pending grants nothing
        secret, device = sessions.complete_login(s, mailer, ws, user, method="totp", device=None)
    assert secret != pending_secret and len(device) >= 20
    with transaction(hub.sessions) as s:
        assert sessions.principal_for_cookie(s, planted_secret, TIMEOUTS) is None  # fixation: old one ended
        assert sessions.principal_for_cookie(s, pending_secret, TIMEOUTS) is None
        principal = sessions.principal_for_cookie(s, secret, TIMEOUTS)
        assert principal is not None and principal.method == "session" and principal.recently_authenticated
        new_secret = sessions.rotate(s, s.get(WebSession, principal.session_id))
    with transaction(hub.sessions) as s:
        assert sessions.principal_for_cookie(s, secret, TIMEOUTS) is None
        assert sessions.principal_for_cookie(s, new_secret, TIMEOUTS) is not None
    with transaction(hub.sessions) as s:
        row = s.scalar(sa.select(WebSession).where(WebSession.secret_hash == sessions.secret_hash(new_secret)))
        assert row is not None and new_secret not in str(row.secret_hash)


def test_session_idle_absolute_and_sudo_timeouts(hub: Hub) -> None:
    uid = _user(hub)
    with transaction(hub.sessions) as s:
        ws, secret = sessions.start(s, s.get(User, uid), pending=False, ip=None, user_agent=None)
        ws_id = ws.id
    with transaction(hub.sessions) as s:
        s.get(WebSession, ws_id).authenticated_at = utcnow() - timedelta(minutes=16)
    with transaction(hub.sessions) as s:
        principal = sessions.principal_for_cookie(s, secret, TIMEOUTS)
        assert principal is not None and not principal.recently_authenticated
        assert not authorize(principal, Permission.ACCOUNT_SECURITY)
        assert authorize(principal, Permission.ACCOUNT_MANAGE)
        assert sessions.reauthenticate(s, s.get(WebSession, ws_id), s.get(User, uid), PASSWORD)
    with transaction(hub.sessions) as s:
        assert sessions.principal_for_cookie(s, secret, TIMEOUTS).recently_authenticated
        s.get(WebSession, ws_id).last_seen_at = utcnow() - timedelta(minutes=61)
    with transaction(hub.sessions) as s:
        assert sessions.principal_for_cookie(s, secret, TIMEOUTS) is None  # idle
        row = s.get(WebSession, ws_id)
        row.last_seen_at = utcnow()
        row.created_at = utcnow() - timedelta(days=1, minutes=1)
    with transaction(hub.sessions) as s:
        assert sessions.principal_for_cookie(s, secret, TIMEOUTS) is None  # absolute


def test_password_change_ends_other_sessions_and_notifies(hub: Hub, mailer: RecordingMailer) -> None:
    uid = _user(hub)
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        mine, my_secret = sessions.start(s, user, pending=False, ip=None, user_agent=None)
        _, other_secret = sessions.start(s, user, pending=False, ip=None, user_agent=None)
        assert not accounts.change_password(s, mailer, user, "wrong", "a-new-good-password", min_length=10,
                                            keep_session_id=mine.id)
        assert accounts.change_password(s, mailer, user, PASSWORD, "a-new-good-password", min_length=10,
                                        keep_session_id=mine.id)
    with transaction(hub.sessions) as s:
        assert sessions.principal_for_cookie(s, my_secret, TIMEOUTS) is not None
        assert sessions.principal_for_cookie(s, other_secret, TIMEOUTS) is None
        assert sessions.authenticate(s, "alice", "a-new-good-password", None) is not None
    assert [m.subject for m in mailer.sent] == ["[Bastion] Your password was changed"]


def test_reset_link_works_once(hub: Hub, mailer: RecordingMailer) -> None:
    uid = _user(hub)
    key = b"k" * 32
    with transaction(hub.sessions) as s:
        accounts.request_password_reset(s, mailer, key, "alice@example.com", None)
    token = mailer.sent[0].body.split("token=")[1].split()[0]
    with transaction(hub.sessions) as s:
        assert accounts.reset_password(s, mailer, key, token, "brand-new-secret-1", min_length=10).id == uid
    with pytest.raises(Forbidden), transaction(hub.sessions) as s:
        accounts.reset_password(s, mailer, key, token, "another-secret-22", min_length=10)
    assert "user.password_reset" in _actions(hub)


# ---- passwords and policy ------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["short", "password123", "QWERTYUIOP", "alice12345"[:5] * 2, "1234567890"])
def test_weak_passwords_are_refused(bad: str) -> None:
    with pytest.raises(BadRequest):
        passwords.check_policy(bad, 10, username="alicealice", email="alice@example.com")


def test_argon2id_and_rehash_on_login(hub: Hub) -> None:
    uid = _user(hub)
    weak = passwords.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with transaction(hub.sessions) as s:
        user = s.get(User, uid)
        assert user.password_hash.startswith("$argon2id$")
        user.password_hash = weak.hash(PASSWORD)  # as stored by an older, cheaper configuration
    with transaction(hub.sessions) as s:
        assert sessions.authenticate(s, "alice", PASSWORD, None) is not None
    with transaction(hub.sessions) as s:
        assert not passwords.HASHER.check_needs_rehash(s.get(User, uid).password_hash)


def test_browser_only_permissions() -> None:
    token = Principal(method="token", user_id=1, username="a", token_id=1, token_role="write")
    session = Principal(method="session", user_id=1, username="a", session_id=1, recently_authenticated=True)
    assert not authorize(token, Permission.ACCOUNT_MANAGE) and not authorize(token, Permission.ACCOUNT_SECURITY)
    assert authorize(session, Permission.ACCOUNT_SECURITY)
    assert not authorize(session, Permission.REPO_CREATE)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_concurrent_uses_of_one_code_admit_exactly_one(database: str, tmp_path: Path, pg_admin_url: str,
                                                        mailer: RecordingMailer) -> None:
    """Two sign-ins racing with the same TOTP code, or the same recovery code: one wins, one is refused."""
    from tests.conftest import create_pg_database, drop_pg_database

    dbname, url = create_pg_database(pg_admin_url) if database == "postgresql" else (None, None)
    h = Hub.open(Settings(data_dir=tmp_path, database_url=url))
    try:
        uid = _user(h)
        secret = twofactor.new_totp_secret()
        with transaction(h.sessions) as s:
            codes = twofactor.enable_totp(s, mailer, BOX, s.get(User, uid), secret, pyotp.TOTP(secret).now())
        assert codes
        now = time.time()
        attempts = [lambda s, u: twofactor.verify_totp(s, BOX, u, pyotp.TOTP(secret).at(now + 30), None, now=now),
                    lambda s, u: twofactor.use_recovery_code(s, mailer, u, codes[0], None)]
        for attempt in attempts:
            results: list[bool] = []

            def second(attempt=attempt, results=results) -> None:  # type: ignore[no-untyped-def]
                with transaction(h.sessions) as s2:
                    results.append(attempt(s2, s2.get(User, uid)))

            with transaction(h.sessions) as s1:
                results.append(attempt(s1, s1.get(User, uid)))
                racer = threading.Thread(target=second)
                racer.start()
                racer.join(1)
                assert racer.is_alive()  # waiting on the first sign-in's lock
            racer.join(60)
            assert results == [True, False]
    finally:
        h.close()
        if dbname:
            drop_pg_database(pg_admin_url, dbname)


def test_invite_only_signup_needs_a_valid_invitation_for_that_address_used_once(hub: Hub,
                                                                                mailer: RecordingMailer) -> None:
    key = b"instance key"
    invite = accounts.make_invite(key, "Carol@Example.com")

    def signup(name: str, email: str, token: str | None) -> User:
        with transaction(hub.sessions) as s:
            return accounts.signup(s, mailer, key, mode="invite", name=name, email=email, password=PASSWORD,
                                   min_password_length=10, invite=token)

    for token, email, message in ((None, "carol@example.com", "needs an invitation link"),
                                  (invite, "mallory@example.com", "for another e-mail address"),
                                  (invite[:-2] + "xx", "carol@example.com", "invalid or has expired"),
                                  (accounts.make_invite(b"another instance", "carol@example.com"),
                                   "carol@example.com", "invalid or has expired")):
        with pytest.raises(Forbidden, match=message):
            signup("carol", email, token)
    assert signup("carol", "carol@example.com", invite).name == "carol"
    with pytest.raises(Forbidden, match="already been used"):
        signup("carol2", "CAROL@example.com", invite)
    with transaction(hub.sessions) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(User)) == 1
