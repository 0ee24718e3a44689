"""orgs.service on a real database: each rule of the issue, and the exact audit events each action writes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.accounts import service as accounts
from bastion.accounts.models import User, UserEmail
from bastion.audit.models import AuditEvent
from bastion.authz import Permission, Principal, authorize
from bastion.authz.policy import TOKEN_APPROVAL_REQUIRED, TOKEN_REVOKED_BY_ORG
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest, Conflict, Forbidden, NotFound
from bastion.hub import Hub
from bastion.mail import Mailer, Message
from bastion.orgs import service as orgs
from bastion.orgs.models import OrgInvitation
from bastion.repos import service as repos
from bastion.tokens import governance
from bastion.tokens import service as tokens
from bastion.tokens.restrictions import InvalidRestriction, parse_scope


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub.open(Settings(data_dir=tmp_path, scanners=[]))
    yield h
    h.close()


def _events(s: Session, since: int) -> list[str]:
    return list(s.scalars(select(AuditEvent.action).where(AuditEvent.id > since).order_by(AuditEvent.id)))


def _last_event(s: Session) -> int:
    return s.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0


def _users(s: Session, *names: str) -> list[User]:
    return [accounts.create_user(s, n, f"{n}@example.com", email_verified=True) for n in names]


def test_org_names_share_the_user_namespace(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        (alice,) = _users(s, "alice")
        with pytest.raises(Conflict):
            orgs.create_org(s, alice, "ALICE")
        orgs.create_org(s, alice, "acme", "Acme Corp")
    with pytest.raises(Conflict), transaction(hub.sessions) as s:
        accounts.create_user(s, "Acme", "acme@example.com")


def test_create_and_membership_audit_events(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob = _users(s, "alice", "bob")
        start = _last_event(s)
        org = orgs.create_org(s, alice, "acme", "Acme Corp")
        assert _events(s, start) == ["org.create", "org.add_user"]
        start = _last_event(s)
        orgs.add_member(s, org, bob)  # the default role
        assert orgs.member(s, org, bob).role == "read"  # type: ignore[union-attr]
        orgs.change_role(s, org, bob, "write")
        orgs.remove_member(s, org, bob)
        assert _events(s, start) == ["org.add_user", "org.change_role", "org.remove_user"]
        # the last admin can neither leave, nor be removed, nor be demoted
        for act in (lambda: orgs.leave(s, org, alice), lambda: orgs.remove_member(s, org, alice),
                    lambda: orgs.change_role(s, org, alice, "read")):
            with pytest.raises(Conflict):
                act()
        with pytest.raises(BadRequest):
            orgs.add_member(s, org, bob, "owner")


def test_role_change_replaces_group_memberships(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob = _users(s, "alice", "bob")
        org = orgs.create_org(s, alice, "acme")
        g1, g2 = orgs.create_group(s, org, "one"), orgs.create_group(s, org, "two")
        orgs.add_member(s, org, bob, "read")
        start = _last_event(s)
        orgs.change_role(s, org, bob, "no_access", [orgs.GroupAssignment(g1, "write")])
        assert [r for _u, r in orgs.group_members(s, g1)] == ["write"]
        orgs.change_role(s, org, bob, "no_access", [orgs.GroupAssignment(g2, "admin")])
        assert orgs.group_members(s, g1) == [] and [r for _u, r in orgs.group_members(s, g2)] == ["admin"]
        orgs.change_role(s, org, bob, "no_access", [])
        assert orgs.group_members(s, g2) == []
        assert _events(s, start) == ["org.change_role", "resource_group.add_users", "resource_group.remove_users",
                                     "resource_group.add_users", "resource_group.remove_users"]
        outsider = _users(s, "carol")[0]
        with pytest.raises(BadRequest):
            orgs.set_group_member(s, org, g1, outsider, "read")  # group members must be org members


def test_invitation_accept_decline_and_expiry(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob, carol = _users(s, "alice", "bob", "carol")
        org = orgs.create_org(s, alice, "acme")
        start = _last_event(s)
        _inv, secret = orgs.invite(s, None, org, alice, "bob@example.com", "contributor")
        assert _events(s, start) == ["org.invite_user"]
        with pytest.raises(Forbidden):
            orgs.accept_invitation(s, secret, carol)  # a forwarded link: carol has not verified bob's address
        assert orgs.accept_invitation(s, secret, bob).name == "acme"
        assert orgs.member(s, org, bob).role == "contributor"  # type: ignore[union-attr]
        with pytest.raises(NotFound):
            orgs.accept_invitation(s, secret, bob)  # answered
        _inv, declined = orgs.invite(s, None, org, alice, "carol@example.com")
        orgs.decline_invitation(s, declined, carol)
        assert orgs.member(s, org, carol) is None
        inv, expired = orgs.invite(s, None, org, alice, "carol@example.com")
        inv.expires_at = utcnow() - timedelta(seconds=1)
        with pytest.raises(NotFound):
            orgs.accept_invitation(s, expired, carol)
        # unverified addresses do not count either
        s.add(UserEmail(user_id=carol.id, email="c2@example.com", email_lower="c2@example.com"))
        _inv, other = orgs.invite(s, None, org, alice, "c2@example.com")
        with pytest.raises(Forbidden):
            orgs.accept_invitation(s, other, carol)
        assert s.scalar(select(OrgInvitation.secret_hash).where(OrgInvitation.email == "c2@example.com")) != other


def test_resource_groups_rules(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        (alice,) = _users(s, "alice")
        org, other = orgs.create_org(s, alice, "acme"), orgs.create_org(s, alice, "other")
        group, foreign = orgs.create_group(s, org, "team"), orgs.create_group(s, other, "team")
        with pytest.raises(Conflict):
            orgs.create_group(s, org, "TEAM")
        repo = repos.create_repo(hub, s, alice, repos.namespace_ref(s, "acme"), "m", "model", True)
        start = _last_event(s)
        repos.set_repo_group(s, repo, group)
        assert repo.resource_group_id == group.id
        with pytest.raises(BadRequest):
            repos.set_repo_group(s, repo, foreign)
        with pytest.raises(Conflict):
            orgs.delete_group(s, org, group)  # still holds a repo
        orgs.rename_group(s, org, group, "renamed")
        repos.set_repo_group(s, repo, None)
        orgs.delete_group(s, org, group)
        assert _events(s, start) == ["repo.update_resource_group", "resource_group.settings",
                                     "repo.update_resource_group", "resource_group.delete"]
        with pytest.raises(Conflict):
            orgs.delete_org(s, org)  # still owns a repo
        user_repo = repos.create_repo(hub, s, alice, repos.namespace_ref(s, "alice"), "u", "model", False)
        with pytest.raises(BadRequest):
            repos.set_repo_group(s, user_repo, foreign)


def test_repo_visibility_policy(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob = _users(s, "alice", "bob")
        org = orgs.create_org(s, alice, "acme")
        orgs.add_member(s, org, bob, "write")
        facts = orgs.org_facts(s, org)
        assert orgs.repo_private_on_create(facts, None) is False
        orgs.set_security(s, org, repo_visibility="private")
        facts = orgs.org_facts(s, org)
        assert orgs.repo_private_on_create(facts, None) is True
        assert orgs.repo_private_on_create(facts, False) is False
        orgs.set_security(s, org, repo_visibility="private_only")
        facts = orgs.org_facts(s, org)
        with pytest.raises(Forbidden):
            orgs.repo_private_on_create(facts, False)
        bob_p = Principal(method="token", user_id=bob.id, username="bob", token_id=1, token_role="write")
        alice_p = Principal(method="token", user_id=alice.id, username="alice", token_id=2, token_role="write")
        with pytest.raises(Forbidden):
            orgs.check_visibility_change(facts, bob_p, False)
        orgs.check_visibility_change(facts, alice_p, False)  # admins may
        orgs.check_visibility_change(facts, bob_p, True)
        with pytest.raises(BadRequest):
            orgs.set_security(s, org, repo_visibility="secret")


def test_token_governance_states(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob = _users(s, "alice", "bob")
        org = orgs.create_org(s, alice, "acme")
        orgs.add_member(s, org, bob, "write")
        repo = repos.create_repo(hub, s, alice, repos.namespace_ref(s, "acme"), "m", "model", True)
        start = _last_event(s)
        orgs.set_token_policy(s, org, "approval")
        scope = [parse_scope("org", "acme", ["repo.write"])]
        bob_tok = tokens.create_token(s, bob, "ci", "fineGrained", None, scope).token
        alice_tok = tokens.create_token(s, alice, "mine", "fineGrained", None, scope).token
        assert _events(s, start) == ["org.token_approval.enabled", "token.create",
                                     "org.token_approval.authorization_request", "token.create",
                                     "org.token_approval.authorized"]
        listed = {t.token.id: t.state for t in governance.tokens_reaching(s, org)}
        assert listed[bob_tok.id] == "pending" and listed[alice_tok.id] == "approved"

        def decide(tok_id: int) -> tuple[bool, str]:
            tok = s.get(type(bob_tok), tok_id)
            assert tok is not None
            d = authorize(tokens.principal_for_token(tok), Permission.REPO_WRITE, repos.repo_ref(repo))
            return bool(d), d.reason

        assert decide(bob_tok.id) == (False, TOKEN_APPROVAL_REQUIRED)
        assert decide(alice_tok.id)[0]
        governance.decide_token(s, None, org, bob_tok, alice, "approve")
        assert decide(bob_tok.id)[0]
        governance.decide_token(s, None, org, bob_tok, alice, "deny")  # reversible both ways
        assert decide(bob_tok.id) == (False, TOKEN_APPROVAL_REQUIRED)
        governance.decide_token(s, None, org, bob_tok, alice, "approve")
        governance.decide_token(s, None, org, bob_tok, alice, "revoke")
        assert decide(bob_tok.id) == (False, TOKEN_REVOKED_BY_ORG)
        with pytest.raises(Conflict):
            governance.decide_token(s, None, org, bob_tok, alice, "approve")  # revocation is permanent
        orgs.set_token_policy(s, org, "allow")
        assert decide(bob_tok.id) == (False, TOKEN_REVOKED_BY_ORG)  # whatever the policy
        assert bob_tok.id not in {t.token.id for t in governance.tokens_reaching(s, org)}  # hidden by default
        assert bob_tok.id in {t.token.id for t in governance.tokens_reaching(s, org, include_revoked=True)}
        # the token still works outside the org
        mine = repos.create_repo(hub, s, bob, repos.namespace_ref(s, "bob"), "own", "model", True)
        own_scope = tokens.create_token(s, bob, "both", "fineGrained", None,
                                        [*scope, parse_scope("user", "bob", ["repo.write"])]).token
        governance.decide_token(s, None, org, own_scope, alice, "revoke")
        p = tokens.principal_for_token(own_scope)
        assert authorize(p, Permission.REPO_WRITE, repos.repo_ref(mine))
        assert not authorize(p, Permission.REPO_WRITE, repos.repo_ref(repo))


def test_fine_grained_policy_and_tokens_of_non_members(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob, carol = _users(s, "alice", "bob", "carol")
        org = orgs.create_org(s, alice, "acme")
        orgs.add_member(s, org, bob, "write")
        repo = repos.create_repo(hub, s, alice, repos.namespace_ref(s, "acme"), "m", "model", True)
        write = tokens.create_token(s, bob, "w", "write").token
        carol_tok = tokens.create_token(s, carol, "c", "write").token
        orgs.set_token_policy(s, org, "fine_grained")
        d = authorize(tokens.principal_for_token(write), Permission.REPO_READ, repos.repo_ref(repo))
        assert not d and "only fine-grained tokens" in d.reason and d.disclose
        ids = {t.token.id for t in governance.tokens_reaching(s, org)}
        assert write.id in ids and carol_tok.id not in ids
        with pytest.raises(NotFound):
            governance.decide_token(s, None, org, carol_tok, alice, "revoke")
        with pytest.raises(BadRequest):
            governance.decide_token(s, None, org, write, alice, "approve")  # approvals need the approval policy


def test_two_factor_requirement_message(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob = _users(s, "alice", "bob")
        org = orgs.create_org(s, alice, "acme")
        orgs.add_member(s, org, bob, "read")
        repo = repos.create_repo(hub, s, alice, repos.namespace_ref(s, "acme"), "m", "model", True)
        public = repos.create_repo(hub, s, alice, repos.namespace_ref(s, "acme"), "p", "model", False)
        start = _last_event(s)
        orgs.set_security(s, org, require_2fa=True)
        assert _events(s, start) == ["org.settings.security.2fa.enable"]
        p = Principal(method="session", user_id=bob.id, username="bob", session_id=1)
        d = authorize(p, Permission.REPO_READ, repos.repo_ref(repo))
        assert not d and d.disclose and "requires two-factor authentication" in d.reason
        assert authorize(p, Permission.REPO_READ, repos.repo_ref(public))
        bob.totp_secret = "JBSWY3DPEHPK3PXP"
        s.flush()
        assert authorize(p, Permission.REPO_READ, repos.repo_ref(repo))


def test_contributor_writes_only_own_repos_and_group_scopes(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        alice, bob = _users(s, "alice", "bob")
        org = orgs.create_org(s, alice, "acme")
        orgs.add_member(s, org, bob, "contributor")
        theirs = repos.create_repo(hub, s, alice, repos.namespace_ref(s, "acme"), "a", "model", True)
        ns = repos.namespace_ref(s, "acme")
        p = Principal(method="token", user_id=bob.id, username="bob", token_id=1, token_role="write")
        assert authorize(p, Permission.REPO_CREATE, ns)
        mine = repos.create_repo(hub, s, bob, ns, "b", "model", True)
        assert authorize(p, Permission.REPO_WRITE, repos.repo_ref(mine))
        assert authorize(p, Permission.REPO_READ, repos.repo_ref(theirs))
        assert not authorize(p, Permission.REPO_WRITE, repos.repo_ref(theirs))
        group = orgs.create_group(s, org, "team")
        with pytest.raises(InvalidRestriction):
            parse_scope("resource-group", "acme/team", ["repo.write"])  # groups are named by id
        orgs.set_group_member(s, org, group, bob, "admin")
        repos.set_repo_group(s, theirs, group)
        assert authorize(p, Permission.REPO_WRITE, repos.repo_ref(theirs))  # the group role applies in the group
        in_group = dataclasses.replace(ns, group=orgs.group_facts(s, group))
        assert authorize(p, Permission.REPO_CREATE, in_group)



class _Outbox(Mailer):
    """Records what would be sent (the SMTP path itself is covered by the HTTP tests)."""

    def __init__(self) -> None:
        super().__init__(None, "test@localhost", public_url="http://bastion.test")
        self.sent: list[tuple[str, str]] = []

    def queue(self, _session: Session, message: Message) -> None:
        self.sent.append((message.to, message.subject))


def test_pending_tokens_mail_the_admins_of_that_database_only(hub: Hub, tmp_path: Path) -> None:
    outbox = _Outbox()
    governance.install(hub.engine, outbox)
    other = Hub.open(Settings(data_dir=tmp_path / "other", scanners=[]))
    try:
        for h in (hub, other):
            with transaction(h.sessions) as s:
                alice, bob = _users(s, "alice", "bob")
                org = orgs.create_org(s, alice, "acme")
                orgs.add_member(s, org, bob, "write")
                orgs.set_token_policy(s, org, "approval")
                tokens.create_token(s, bob, "ci", "fineGrained", None, [parse_scope("org", "acme", ["repo.write"])])
                tokens.create_token(s, alice, "own", "fineGrained", None, [parse_scope("org", "acme", ["org.read"])])
        # one mail, to the admin, for bob's token; none for the admin's own (auto-approved) token, none from `other`
        assert outbox.sent == [("alice@example.com", "[Bastion] A token needs approval for acme")]
    finally:
        other.close()
