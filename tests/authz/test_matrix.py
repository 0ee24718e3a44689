"""The authorization matrix: principals × credentials × resources × actions, expected answers
written here from the issue's rules (never derived from the policy code), 0 mismatches allowed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.accounts import service as accounts
from bastion.authz import NamespaceRef, Permission, Principal, authorize
from bastion.config import Settings
from bastion.db import transaction
from bastion.errors import InvalidCredentials
from bastion.hub import Hub
from bastion.repos import service as repos
from bastion.tokens import service as tokens
from bastion.tokens.restrictions import parse_scope

TYPES = ("model", "dataset", "space")
ACTIONS = ("read", "list", "download", "write", "delete", "visibility", "create_own", "create_other", "tokens")
CREDENTIALS = ("session", "session_sudo", "read", "write", "fg_user_write", "fg_user_read", "fg_one_repo",
               "fg_other_repo", "expired", "revoked", "rotated_away")


@dataclass(frozen=True)
class RepoCase:
    owner: str
    type: str
    private: bool

    @property
    def name(self) -> str:
        return f"{self.type}-{'priv' if self.private else 'pub'}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, dict[str, object]]]:
    hub = Hub.open(Settings(data_dir=Path(tmp_path_factory.mktemp("matrix")), scanners=[]))
    ids: dict[str, object] = {}
    with transaction(hub.sessions) as s:
        for name, admin in (("owner", False), ("other", False), ("operator", True)):
            ids[name] = accounts.create_user(s, name, f"{name}@example.com", is_admin=admin)
        for who, t, private in itertools.product(("owner", "other"), TYPES, (False, True)):
            case = RepoCase(who, t, private)
            repos.create_repo(hub, s, ids[who], repos.namespace_ref(s, who), case.name, t, private)  # type: ignore[arg-type]
    yield hub, ids
    hub.close()


def _principal(hub: Hub, ids: dict[str, object], user: str, cred: str) -> Principal | None:
    """The principal a credential authenticates as; None when authentication itself fails."""
    if user == "anon":
        return Principal.anonymous()
    u = ids[user]
    if cred.startswith("session"):
        return Principal(method="session", user_id=u.id, username=user, is_admin=u.is_admin,  # type: ignore[attr-defined]
                         session_id=1, recently_authenticated=cred == "session_sudo")
    role, scopes, expires = "write", None, None
    if cred == "read":
        role = "read"
    elif cred.startswith("fg_"):
        role = "fineGrained"
        scopes = {
            "fg_user_write": [parse_scope("user", user, ["repo.write"])],
            "fg_user_read": [parse_scope("user", user, ["repo.content.read"])],
            "fg_one_repo": [parse_scope("model", f"{user}/model-priv", ["repo.write"])],
            "fg_other_repo": [parse_scope("model", "other/model-priv" if user != "other" else "owner/model-priv",
                                          ["repo.write"])],
        }[cred]
    with transaction(hub.sessions) as s:
        issued = tokens.create_token(s, s.get(type(u), u.id), f"{user}-{cred}", role, expires, scopes)  # type: ignore[attr-defined]
        secret = issued.secret
        if cred == "expired":
            issued.token.expires_at = datetime.now(UTC) - timedelta(days=1)
        if cred == "revoked":
            tokens.revoke_token(s, issued.token)
        if cred == "rotated_away":
            tokens.rotate_token(s, issued.token)  # `secret` is now the old, dead one
    try:
        with transaction(hub.sessions) as s:
            return tokens.principal_for_token(tokens.authenticate(s, secret, "127.0.0.1", "matrix"))
    except InvalidCredentials:
        return None


def expected(user: str, cred: str, action: str, repo: RepoCase) -> bool:
    """The rules of the issue, stated directly."""
    if user == "anon":
        return action in ("read", "list", "download") and not repo.private
    if cred in ("expired", "revoked", "rotated_away"):
        return False  # the credential does not authenticate at all
    if action == "tokens":
        return cred == "session_sudo"  # token management: browser session with recent re-authentication only
    admin = user == "operator"
    owns = admin or repo.owner == user
    can_read = not repo.private or owns
    session = cred.startswith("session")
    # which repos a fine-grained token's scopes cover, and with which permission
    covers_read = covers_write = True
    if cred.startswith("fg_"):
        in_ns = repo.owner == user
        one = f"{repo.owner}/{repo.name}" == f"{user}/model-priv" and repo.type == "model"
        other_ns = "owner" if user == "other" else "other"
        other = f"{repo.owner}/{repo.name}" == f"{other_ns}/model-priv" and repo.type == "model"
        covers_read = {"fg_user_write": in_ns, "fg_user_read": in_ns, "fg_one_repo": one, "fg_other_repo": other}[cred]
        covers_write = covers_read and cred != "fg_user_read"
    if action in ("read", "list", "download"):
        return can_read and (not repo.private or covers_read)
    if action in ("write", "delete", "visibility"):
        return not session and cred != "read" and owns and covers_write
    if action in ("create_own", "create_other"):
        target = user if action == "create_own" else ("other" if user != "other" else "owner")
        may = target == user or admin
        if cred.startswith("fg_"):
            may = may and cred == "fg_user_write" and target == user
        return not session and cred != "read" and may
    raise AssertionError(action)


ACTION_PERMISSION = {"read": Permission.REPO_READ, "download": Permission.REPO_READ, "write": Permission.REPO_WRITE,
                     "delete": Permission.REPO_DELETE, "visibility": Permission.REPO_MANAGE}


def actual(hub: Hub, principal: Principal | None, user: str, action: str, repo: RepoCase) -> bool:
    if principal is None:
        return False
    with transaction(hub.sessions) as s:
        row = repos.find_repo(s, repo.type, repo.owner, repo.name)
        if action == "list":
            listing = repos.list_repos(s, principal, repo.type, author=repo.owner, search=[], sort=None,
                                       direction=-1, limit=100, offset=0)
            return any(r.id == row.id for r in listing.repos)
        if action == "tokens":
            return bool(authorize(principal, Permission.TOKEN_MANAGE))
        if action in ("create_own", "create_other"):
            target = user if action == "create_own" else ("other" if user != "other" else "owner")
            if user == "anon":
                target = "owner"
            ns = repos.namespace_ref(s, target)
            return bool(authorize(principal, Permission.REPO_CREATE, NamespaceRef(ns.name, ns.owner_user_id)))
        return bool(authorize(principal, ACTION_PERMISSION[action], repos.repo_ref(row)))


def test_authorization_matrix(world: tuple[Hub, dict[str, object]], capsys: pytest.CaptureFixture[str]) -> None:
    hub, ids = world
    cases = mismatches = 0
    problems = []
    repo_cases = [RepoCase(o, t, p) for o, t, p in itertools.product(("owner", "other"), TYPES, (False, True))]
    for user in ("owner", "other", "operator", "anon"):
        for cred in (CREDENTIALS if user != "anon" else ("none",)):
            principal = _principal(hub, ids, user, cred)
            for action, repo in itertools.product(ACTIONS, repo_cases):
                cases += 1
                want = expected(user, cred, action, repo)
                got = actual(hub, principal, user, action, repo)
                if want != got:
                    mismatches += 1
                    problems.append(f"{user}/{cred}/{action}/{repo}: expected {want}, got {got}")
    with capsys.disabled():
        print(f"\nauthorization matrix: {cases} cases, {mismatches} mismatches")
    assert cases >= 500
    assert problems == []
