"""The SSO rule of the policy, as a pure decision: while an org enforces SSO, every right that comes from
membership needs a live SSO session (OrgFacts.sso_ok) — tokens and browsers alike; public content, instance
admins and exempt members (in sso_ok) are unaffected; the denial names SSO and the org (errors.SSORequired)."""

from __future__ import annotations

import pytest

from bastion.authz import Permission, Principal, RepoRef, authorize, require
from bastion.authz.policy import GroupRef, NamespaceRef, OrgFacts
from bastion.errors import SSORequired

ORG = OrgFacts(id=1, name="acme", roles={10: "admin", 11: "write", 12: "read"}, sso_required=True,
               sso_ok=frozenset({12}))
PRIVATE = RepoRef(id=1, namespace="acme", owner_user_id=None, private=True, name="m", org=ORG)
PUBLIC = RepoRef(id=2, namespace="acme", owner_user_id=None, private=False, name="p", org=ORG)


def token(user_id: int) -> Principal:
    return Principal(method="token", user_id=user_id, username=f"u{user_id}", token_id=user_id, token_role="write")


def session(user_id: int) -> Principal:
    return Principal(method="session", user_id=user_id, username=f"u{user_id}", session_id=user_id)


@pytest.mark.parametrize("who", [token, session])
@pytest.mark.parametrize("perm", [Permission.REPO_METADATA_READ, Permission.REPO_READ])
def test_members_without_a_live_sso_session_are_refused(who, perm) -> None:  # type: ignore[no-untyped-def]
    for user_id in (10, 11):  # the org's admin too
        decision = authorize(who(user_id), perm, PRIVATE)
        assert not decision and decision.sso_org == "acme" and decision.disclose
        with pytest.raises(SSORequired, match="single sign-on") as raised:
            require(who(user_id), perm, PRIVATE)
        assert raised.value.org == "acme" and raised.value.status == 403
    assert authorize(who(12), perm, PRIVATE)  # a live session (or an external collaborator)


def test_every_right_from_membership_needs_it() -> None:
    t = token(11)
    assert not authorize(t, Permission.REPO_WRITE, PUBLIC)  # writing a public repo comes from membership
    assert authorize(t, Permission.REPO_READ, PUBLIC)  # public content stays public
    assert not authorize(t, Permission.REPO_CREATE, NamespaceRef(name="acme", owner_user_id=None, org=ORG))
    assert not authorize(token(10), Permission.ORG_WRITE, ORG)
    assert not authorize(token(10), Permission.RESOURCE_GROUP_WRITE, GroupRef(ORG))
    assert authorize(Principal(method="token", user_id=99, is_admin=True, token_role="write"), Permission.REPO_READ,
                     PRIVATE)  # instance admins are outside org policies


def test_no_enforcement_no_effect() -> None:
    open_org = OrgFacts(id=1, name="acme", roles={11: "write"})
    repo = RepoRef(id=1, namespace="acme", owner_user_id=None, private=True, name="m", org=open_org)
    assert authorize(token(11), Permission.REPO_WRITE, repo)
