"""The authorization policy: every route declares and checks a permission; the decision matrix."""

from __future__ import annotations

import itertools

import pytest
from fastapi.routing import APIRoute

from bastion.authz import NamespaceRef, Permission, Principal, RepoRef, authorize, readable_repos_clause
from bastion.authz.policy import METHOD_GRANTS, BoundCapability, GateFacts, RepoColumns
from bastion.tokens.restrictions import ReadOnly


def _api_routes(routes: list[object]) -> list[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI keeps those as nested objects)."""
    out: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(r)
        elif getattr(r, "original_router", None) is not None:
            out += _api_routes(r.original_router.routes)  # type: ignore[attr-defined]
    return out


def test_every_route_declares_a_permission(tmp_path: pytest.TempPathFactory) -> None:
    from bastion.app import create_app
    from bastion.config import Settings

    app = create_app(Settings(data_dir=tmp_path))
    routes = _api_routes(app.routes)
    assert len(routes) > 30
    missing = [f"{sorted(r.methods)} {r.path}" for r in routes
               if not isinstance(getattr(r.endpoint, "__bastion_permission__", None), Permission)]
    assert missing == []


OWNER = Principal(method="token", user_id=1, username="owner", token_id=1, token_role="write")
OWNER_RO = Principal(method="token", user_id=1, username="owner", token_id=2, token_role="read",
                     restrictions=(ReadOnly(),))
OTHER = Principal(method="token", user_id=2, username="other", token_id=3, token_role="write")
ADMIN = Principal(method="token", user_id=3, username="root", is_admin=True, token_id=4, token_role="write")
ANON = Principal.anonymous()
PUBLIC = RepoRef(id=10, namespace="owner", owner_user_id=1, private=False)
PRIVATE = RepoRef(id=11, namespace="owner", owner_user_id=1, private=True)
REPO_PERMS = [Permission.REPO_READ, Permission.REPO_WRITE, Permission.REPO_MANAGE, Permission.REPO_DELETE]

# (principal, repo) -> permissions granted; everything else must be denied.
EXPECTED = {
    ("owner", "public"): set(REPO_PERMS), ("owner", "private"): set(REPO_PERMS),
    ("owner_ro", "public"): {Permission.REPO_READ}, ("owner_ro", "private"): {Permission.REPO_READ},
    ("other", "public"): {Permission.REPO_READ}, ("other", "private"): set(),
    ("admin", "public"): set(REPO_PERMS), ("admin", "private"): set(REPO_PERMS),
    ("anon", "public"): {Permission.REPO_READ}, ("anon", "private"): set(),
}
PRINCIPALS = {"owner": OWNER, "owner_ro": OWNER_RO, "other": OTHER, "admin": ADMIN, "anon": ANON}
REPOS = {"public": PUBLIC, "private": PRIVATE}


@pytest.mark.parametrize(("who", "repo", "perm"), list(itertools.product(PRINCIPALS, REPOS, REPO_PERMS)))
def test_repo_matrix(who: str, repo: str, perm: Permission) -> None:
    decision = authorize(PRINCIPALS[who], perm, REPOS[repo])
    assert bool(decision) == (perm in EXPECTED[(who, repo)]), decision.reason
    if not decision:
        assert decision.reason


def test_create_in_namespace() -> None:
    mine = NamespaceRef("owner", 1)
    assert authorize(OWNER, Permission.REPO_CREATE, mine)
    assert not authorize(OWNER_RO, Permission.REPO_CREATE, mine)
    assert not authorize(OTHER, Permission.REPO_CREATE, mine)
    assert not authorize(ANON, Permission.REPO_CREATE, mine)
    assert not authorize(OWNER, Permission.REPO_CREATE, NamespaceRef("ghost", None))


def test_capability_grants_only_what_it_was_minted_for() -> None:
    claims = {"repo_id": 10, "oid": "a" * 64, "size": 5, "via": "token", "user_id": 1, "token_id": 1}
    cap = Principal(method="capability", capability=claims)
    assert authorize(cap, Permission.LFS_OBJECT_UPLOAD, BoundCapability("lfs-upload", claims, OWNER, PUBLIC))
    assert not authorize(cap, Permission.LFS_OBJECT_UPLOAD, BoundCapability("lfs-upload", {
        **claims, "repo_id": 11}, OWNER, PRIVATE))
    # Bound to its holder, who must still be allowed to upload there; to a repo that still exists.
    assert not authorize(cap, Permission.LFS_OBJECT_UPLOAD, BoundCapability("lfs-upload", claims, OTHER, PUBLIC))
    assert not authorize(cap, Permission.LFS_OBJECT_UPLOAD, BoundCapability("lfs-upload", claims, OWNER, None))
    assert not authorize(cap, Permission.LFS_OBJECT_UPLOAD, BoundCapability("lfs-upload", claims, ANON, PUBLIC))
    for perm in REPO_PERMS:
        assert not authorize(cap, perm, PUBLIC)
    # and a token cannot be used where a capability is required
    assert not authorize(OWNER, Permission.LFS_OBJECT_UPLOAD, BoundCapability("lfs-upload", claims, OWNER, PUBLIC))
    assert Permission.LFS_OBJECT_UPLOAD not in METHOD_GRANTS["token"]


def test_token_without_restrictions_fails_closed() -> None:
    bare_read = Principal(method="token", user_id=1, username="owner", token_id=9, token_role="read")
    for perm in REPO_PERMS:
        assert not authorize(bare_read, perm, PUBLIC)


def test_anonymous_cannot_whoami_or_admin() -> None:
    assert not authorize(ANON, Permission.USER_READ)
    assert not authorize(OWNER, Permission.ADMIN)
    assert authorize(ADMIN, Permission.ADMIN)


def test_listing_clause_agrees_with_authorize() -> None:
    """readable_repos_clause() is the REPO_METADATA_READ rule as SQL (a gated repo is listed, its files are
    gated): check it row by row against authorize()."""
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://")
    meta = sa.MetaData()
    t = sa.Table("r", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("private", sa.Boolean),
                 sa.Column("owner", sa.Integer, nullable=True), sa.Column("type", sa.String),
                 sa.Column("ns", sa.String), sa.Column("name", sa.String))
    cols = RepoColumns(private=t.c.private, owner_user_id=t.c.owner, type=t.c.type, namespace_lower=t.c.ns,
                       name_lower=t.c.name)
    meta.create_all(engine)
    rows = [(i, private, owner) for i, (private, owner) in enumerate(itertools.product([False, True], [1, 2, None]))]
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "private": p, "owner": o, "type": "model", "ns": "ns", "name": f"r{i}"}
                                  for i, p, o in rows])
        for principal in PRINCIPALS.values():
            visible = {r[0] for r in conn.execute(sa.select(t.c.id).where(
                readable_repos_clause(principal, cols)))}
            expected = {i for i, p, o in rows if authorize(principal, Permission.REPO_METADATA_READ,
                                                           RepoRef(i, "ns", o, p, "model", f"r{i}",
                                                                   gate=GateFacts("manual")))}
            assert visible == expected, principal
