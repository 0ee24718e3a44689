"""The organization authorization matrix: org role × group role × repo placement × visibility × creator ×
credential (session, read/write tokens, org-, group- and repo-scoped fine-grained tokens) × token-policy state
× org policy × 2FA. Expected answers are the issue's rules written out here, never derived from the policy."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from bastion.accounts import service as accounts
from bastion.accounts.models import User
from bastion.authz import Permission, Principal, authorize
from bastion.config import Settings
from bastion.db import transaction
from bastion.hub import Hub
from bastion.orgs import service as orgs
from bastion.orgs.models import Organization, OrgTokenApproval
from bastion.repos import service as repos
from bastion.tokens import service as tokens
from bastion.tokens.restrictions import parse_scope

ORG_ROLES = ("no_access", "read", "contributor", "write", "admin")
GROUP_ROLES = (None, "read", "contributor", "write", "admin")
POLICIES = ("allow", "fine_grained", "approval")
STATES = ("none", "approved", "denied", "revoked")  # "none": issued before the policy changed, never reviewed
TOKEN_KINDS = ("write", "read", "fg_org_write", "fg_org_read", "fg_group", "fg_repo")
CREATOR = "m-contributor-contributor-1"  # creates the "mine" repos: contributors may write only those


@dataclass(frozen=True)
class Member:
    org_role: str | None  # None: not a member
    group_role: str | None
    two_factor: bool

    @property
    def name(self) -> str:
        if self.org_role is None:
            return f"outsider-{int(self.two_factor)}"
        return f"m-{self.org_role}-{self.group_role or 'none'}-{int(self.two_factor)}"


@dataclass(frozen=True)
class OrgCase:
    policy: str
    require_2fa: bool

    @property
    def name(self) -> str:
        return f"org-{self.policy.replace('_', '')}-{'2fa' if self.require_2fa else 'open'}"


@dataclass(frozen=True)
class RepoCase:
    in_group: bool
    private: bool
    mine: bool  # created by CREATOR (else by the org admin)

    @property
    def name(self) -> str:
        return f"{'grp' if self.in_group else 'root'}-{'priv' if self.private else 'pub'}-{'c' if self.mine else 'a'}"


MEMBERS = [Member(o, g, tf) for o, g, tf in itertools.product(ORG_ROLES, GROUP_ROLES, (False, True))
           if not (o == "admin" and g is not None)] + [Member(None, None, False), Member(None, None, True)]
ORGS = [OrgCase(p, tf) for p, tf in itertools.product(POLICIES, (False, True))]
REPOS = [RepoCase(g, p, m) for g, p, m in itertools.product((False, True), (False, True), (False, True))]
SCOPED_REPO = RepoCase(False, True, False)  # the one repo fg_repo tokens name (per org)


def expected(m: Member, cred: str, state: str, org: OrgCase, action: str, repo: RepoCase | None) -> bool:
    """The issue's rules, stated directly."""
    if action in ("read", "list") and repo is not None and not repo.private:
        return True  # public content: anyone, any credential, any policy
    if m.org_role is None:
        return False  # no rights in the org (and its private repos are invisible)
    # the member's own rights: org admins everything; at the root the org role; in a group the group role
    if m.org_role == "admin":
        role: str | None = "admin"
    elif action == "create_root":
        role = m.org_role
    elif action == "create_group" or repo is not None and repo.in_group:
        role = m.group_role
    else:
        role = None if m.org_role == "no_access" else m.org_role
    if role is None or role == "no_access":
        return False
    i_created = repo is not None and repo.mine and m.name == CREATOR
    if action in ("write", "delete") and not (role in ("write", "admin") or (role == "contributor" and i_created)):
        return False
    if action in ("create_root", "create_group") and role not in ("contributor", "write", "admin"):
        return False
    if org.require_2fa and not m.two_factor:
        return False
    # what the credential may do
    reading = action in ("read", "list")
    if cred in ("session", "read", "fg_org_read") and not reading:
        return False
    if cred == "fg_group" and not (action == "create_group" or (repo is not None and repo.in_group)):
        return False
    if cred == "fg_repo" and repo != SCOPED_REPO:
        return False
    if cred == "session":
        return True
    # the org's token policy, as it is now (tokens were issued before it was set)
    if state == "revoked":
        return False
    if org.policy == "allow":
        return True
    if not cred.startswith("fg_"):
        return False
    if org.policy == "fine_grained":
        return True
    return state == "approved" or (state == "none" and m.org_role == "admin")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, dict[str, object]]]:
    hub = Hub.open(Settings(data_dir=Path(tmp_path_factory.mktemp("org-matrix")), scanners=[]))
    w: dict[str, object] = {}
    with transaction(hub.sessions) as s:
        users = {m.name: accounts.create_user(s, m.name, f"{m.name}@example.com") for m in MEMBERS}
        for m in MEMBERS:
            if m.two_factor:
                users[m.name].totp_secret = "JBSWY3DPEHPK3PXP"
        boss = users["m-admin-none-1"]
        groups = {}
        for oc in ORGS:
            org = orgs.create_org(s, boss, oc.name)
            group = orgs.create_group(s, org, "team")
            groups[oc.name] = group
            for m in MEMBERS:
                if m.org_role is not None and m.name != boss.name:
                    orgs.add_member(s, org, users[m.name], m.org_role)
                if m.group_role is not None:
                    orgs.set_group_member(s, org, group, users[m.name], m.group_role)
            for rc in REPOS:
                ns = repos.namespace_ref(s, org.name)
                if rc.in_group:
                    ns = dataclasses.replace(ns, group=orgs.group_facts(s, group))
                creator = users[CREATOR] if rc.mine else boss
                repos.create_repo(hub, s, creator, ns, rc.name, "model", rc.private)
        w["groups"] = {k: g.public_id for k, g in groups.items()}
    # tokens are issued while every org allows all tokens; the policies change afterwards
    secrets: dict[tuple[str, str, str], str] = {}
    with transaction(hub.sessions) as s:
        for m in MEMBERS:
            user = s.scalar(select(User).where(User.name == m.name))
            scopes = {
                "fg_org_write": [parse_scope("org", oc.name, ["repo.write"]) for oc in ORGS],
                "fg_org_read": [parse_scope("org", oc.name, ["repo.content.read"]) for oc in ORGS],
                "fg_group": [parse_scope("resource-group", f"{oc.name}/{w['groups'][oc.name]}",  # type: ignore[index]
                                         ["repo.write"]) for oc in ORGS],
                "fg_repo": [parse_scope("model", f"{oc.name}/{SCOPED_REPO.name}", ["repo.write"]) for oc in ORGS],
            }
            for kind, state in itertools.product(TOKEN_KINDS, STATES):
                role = kind if kind in ("read", "write") else "fineGrained"
                issued = tokens.create_token(s, user, f"{kind}-{state}", role, None, scopes.get(kind))  # type: ignore[arg-type]
                secrets[(m.name, kind, state)] = issued.secret
                s.execute(delete(OrgTokenApproval).where(OrgTokenApproval.token_id == issued.token.id))
                if state != "none":
                    for org in s.scalars(select(Organization)):
                        s.add(OrgTokenApproval(org_id=org.id, token_id=issued.token.id, state=state))
        for oc in ORGS:
            org = orgs.get_org(s, oc.name)
            orgs.set_token_policy(s, org, oc.policy)
            orgs.set_security(s, org, require_2fa=oc.require_2fa)
    w["secrets"] = secrets
    yield hub, w
    hub.close()


def _principals(hub: Hub, w: dict[str, object], m: Member) -> list[tuple[str, str, Principal]]:
    out: list[tuple[str, str, Principal]] = []
    with transaction(hub.sessions) as s:
        user = s.scalar(select(User).where(User.name == m.name))
        assert user is not None
        out.append(("session", "none", Principal(method="session", user_id=user.id, username=user.name,
                                                 session_id=1)))
        for kind, state in itertools.product(TOKEN_KINDS, STATES):
            tok = tokens.authenticate(s, w["secrets"][(m.name, kind, state)], "127.0.0.1", "matrix")  # type: ignore[index]
            out.append((kind, state, tokens.principal_for_token(tok)))
    return out


def test_org_authorization_matrix(world: tuple[Hub, dict[str, object]], capsys: pytest.CaptureFixture[str]) -> None:
    hub, w = world
    with transaction(hub.sessions) as s:
        refs = {(oc.name, rc.name): repos.repo_ref(repos.find_repo(s, "model", oc.name, rc.name))
                for oc in ORGS for rc in REPOS}
        ids = {key: ref.id for key, ref in refs.items()}
        ns_root = {oc.name: repos.namespace_ref(s, oc.name) for oc in ORGS}
        ns_group = {oc.name: dataclasses.replace(ns_root[oc.name], group=orgs.group_facts(
            s, orgs.get_group(s, orgs.get_org(s, oc.name), w["groups"][oc.name]))) for oc in ORGS}  # type: ignore[index]
    perms = {"read": Permission.REPO_READ, "write": Permission.REPO_WRITE, "delete": Permission.REPO_DELETE}
    cases = 0
    problems: list[str] = []
    for m in MEMBERS:
        for cred, state, principal in _principals(hub, w, m):
            with transaction(hub.sessions) as s:
                listed = {r.id for r in repos.list_repos(s, principal, "model", author=None, search=[], sort=None,
                                                         direction=-1, limit=10_000, offset=0).repos}
            for oc in ORGS:
                checks: list[tuple[str, RepoCase | None, bool]] = []
                for rc in REPOS:
                    ref = refs[(oc.name, rc.name)]
                    for action, perm in perms.items():
                        checks.append((action, rc, bool(authorize(principal, perm, ref))))
                    checks.append(("list", rc, ids[(oc.name, rc.name)] in listed))
                checks.append(("create_root", None, bool(authorize(principal, Permission.REPO_CREATE,
                                                                   ns_root[oc.name]))))
                checks.append(("create_group", None, bool(authorize(principal, Permission.REPO_CREATE,
                                                                    ns_group[oc.name]))))
                for action, rc, got in checks:
                    cases += 1
                    want = expected(m, cred, state, oc, action, rc)
                    if want != got:
                        problems.append(f"{m.name}/{cred}/{state}/{oc.name}/{action}/{rc.name if rc else '-'}: "
                                        f"expected {want}, got {got}")
    with capsys.disabled():
        print(f"\norganization authorization matrix: {cases} cases, {len(problems)} mismatches")
    assert cases >= 2000
    assert problems[:50] == [], "\n".join(problems[::max(1, len(problems) // 40)])
