"""bastion.lifecycle.service on a real database: what deactivate_user() revokes that the end-to-end tests cannot
reach without an identity provider or a SCIM client (org SSO sessions, provisioning-managed memberships), the
actor of its events, and the counts it returns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.accounts import service as accounts
from bastion.accounts import sessions as web_sessions
from bastion.accounts.models import WebSession
from bastion.audit.context import AuditContext, bind_context
from bastion.audit.models import AuditEvent
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest, Conflict
from bastion.hub import Hub
from bastion.lifecycle import deletion, service
from bastion.orgs import service as orgs
from bastion.orgs.models import OrgMember
from bastion.sso.models import SsoSession
from bastion.tokens import service as tokens
from tests.conftest import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str) -> Iterator[Hub]:
    """Both backends: the redaction reads JSON details as text and compares names case-insensitively."""
    if request.param == "sqlite":
        h = Hub.open(Settings(data_dir=tmp_path, scanners=[]))
        yield h
        h.close()
        return
    name, url = create_pg_database(pg_admin_url)
    h = Hub.open(Settings(data_dir=tmp_path, scanners=[], database_url=url))
    try:
        yield h
    finally:
        h.close()
        drop_pg_database(pg_admin_url, name)


def _count(s: Session, model: type, **where: object) -> int:
    return int(s.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0)


def test_deactivation_revokes_sso_sessions_and_only_the_memberships_the_source_manages(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        owner = accounts.create_user(s, "owner", "owner@example.com", email_verified=True)
        bob = accounts.create_user(s, "bob", "bob@example.com", email_verified=True)
        scim_org, hand_org = orgs.create_org(s, owner, "idp-org"), orgs.create_org(s, owner, "hand-org")
        orgs.add_member(s, scim_org, bob, "write")
        orgs.add_member(s, hand_org, bob, "read")
        s.execute(OrgMember.__table__.update().where(OrgMember.org_id == scim_org.id,
                                                     OrgMember.user_id == bob.id).values(managed_by="scim"))
        for org in (scim_org, hand_org):
            s.add(SsoSession(org_id=org.id, user_id=bob.id, subject=f"sub-{org.id}", email="bob@example.com",
                             authenticated_at=utcnow(), expires_at=utcnow() + timedelta(days=1)))
        web_sessions.start(s, bob, pending=False, ip="10.0.0.9", user_agent="test")
        tokens.create_token(s, bob, "t1", "write")
        tokens.create_token(s, bob, "t2", "read")
        bob_id = bob.id
    with bind_context(AuditContext(via="scim", actor_name="scim-client")), transaction(hub.sessions) as s:
        bob = accounts.get_user_by_name(s, "bob")
        revoked = service.deactivate_user(s, bob, reason="terminated in the IdP", memberships_managed_by="scim")
    assert revoked == service.Revocation(web_sessions=1, tokens=2, approvals=0, sso_sessions=2, memberships=1)
    with transaction(hub.sessions, readonly=True) as s:
        assert _count(s, SsoSession, user_id=bob_id) == 0
        roles = {m.org_id: m.role for m in s.scalars(select(OrgMember).where(OrgMember.user_id == bob_id))}
        assert list(roles.values()) == ["read"]  # the membership granted by hand stays
        assert s.scalar(select(func.count()).select_from(WebSession).where(
            WebSession.user_id == bob_id, WebSession.revoked_at.is_(None))) == 0
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.actor_name == "scim-client")
                                .order_by(AuditEvent.id)))
        assert [e.action for e in events] == ["token.revoke", "token.revoke", "org.remove_user", "user.deactivate"]
        assert all(e.via == "scim" for e in events)
        assert events[-1].details["revoked"]["memberships"] == 1
    # Idempotent: a second call revokes nothing more; reactivation brings nothing back.
    with transaction(hub.sessions) as s:
        bob = accounts.get_user_by_name(s, "bob")
        again = service.deactivate_user(s, bob, reason="", memberships_managed_by="scim")
        assert again == service.Revocation(0, 0, 0, 0, 0)
        service.reactivate_user(s, bob, reason="rehired")
        assert bob.is_active
        assert all(tokens.state(t) == "revoked" for t in tokens.list_tokens(s, bob))
    with transaction(hub.sessions) as s, pytest.raises(BadRequest):
        service.deactivate_user(s, accounts.get_user_by_name(s, "bob"), reason="x" * 501)


def test_a_deleted_account_cannot_be_reactivated_or_deleted_again(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        carol = accounts.create_user(s, "carol", "carol@example.com", email_verified=True)
        done = deletion.delete_account(hub, s, carol, grace_days=0)
    with transaction(hub.sessions) as s:
        tomb = accounts.get_user_by_name(s, done.pseudonym)
        assert tomb.email == "" and tomb.password_hash is None and not tomb.is_active and tomb.deleted_at
        with pytest.raises(Conflict):
            service.reactivate_user(s, tomb, reason="")
        with pytest.raises(Conflict):
            deletion.delete_account(hub, s, tomb, grace_days=0)
    with transaction(hub.sessions, readonly=True) as s:
        assert accounts.find_login_user(s, "carol") is None and accounts.find_login_user(s, "carol@example.com") is None


def test_an_event_naming_two_deleted_accounts_is_redacted_twice_and_still_verifies(hub: Hub) -> None:
    from bastion.audit import service as audit_service

    with transaction(hub.sessions) as s:
        alice = accounts.create_user(s, "alice", "alice@example.com", email_verified=True)
        accounts.create_user(s, "bob", "bob@example.com", email_verified=True)
        orgs.create_org(s, alice, "acme")
    with bind_context(AuditContext(actor_id=alice.id, actor_name="alice", ip="10.1.1.1", user_agent="ua",
                                   via="api")), transaction(hub.sessions) as s:
        orgs.add_member(s, orgs.get_org(s, "acme"), accounts.get_user_by_name(s, "bob"), "read")
        both = s.scalar(select(AuditEvent.id).where(AuditEvent.action == "org.add_user", AuditEvent.target_id == "bob"))
    for name in ("bob", "alice"):
        with transaction(hub.sessions) as s:
            deletion.delete_account(hub, s, accounts.get_user_by_name(s, name), grace_days=0)
        with transaction(hub.sessions, readonly=True) as s:
            walk = audit_service.verify(s)
            assert walk.problem is None, walk.problem
            assert walk.redacted >= 1
    with transaction(hub.sessions, readonly=True) as s:
        ev = s.get(AuditEvent, both)
        assert ev is not None and ev.ip is None and ev.user_agent is None
        text = repr((ev.actor_name, ev.target_id, ev.namespace, ev.details))
        assert "alice" not in text and "bob" not in text and ev.namespace == "acme"
        redactions = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "user.audit_redact")
                                    .order_by(AuditEvent.id)))
        assert len(redactions) == 2 and ev.redacted_by == redactions[1].id
        assert any(entry[0] == both for entry in redactions[0].details["redacted"])  # named by both
