"""Finding 4 (issue 14): repositories cannot leave their organization, or its policies, through a move.

An org `write` member (or a contributor, for repos it created) used to move `acme/private-repo` to its own
namespace with `POST /api/repos/move`: the org lost it, and it escaped the org's 2FA, token and visibility
policies; a contributor also made a repo public under `private_only` by moving it out and back. Now a move to
another owner needs administrator rights in the source org (the Hub's rule for transfers) and the right to
create at the destination, whose policies the repo must meet; a rename inside the org keeps its policies.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import sqlalchemy as sa

from tests.conftest import BastionServer, hf_api


@contextmanager
def _api(server: BastionServer, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
        yield client


def _org(server: BastionServer, owner: str) -> str:
    name = f"org{secrets.token_hex(4)}"
    server.admin("create-org", name, "--owner", owner)
    return name


def _move(client: httpx.Client, src: str, dst: str) -> httpx.Response:
    return client.post("/api/repos/move", json={"fromRepo": src, "toRepo": dst, "type": "model"})


def _audited_moves(server: BastionServer, repo_id: str) -> list[dict[str, str]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = 'repo.move'")).scalars()
            return [d for d in map(json.loads, rows) if d.get("from") == repo_id]
    finally:
        engine.dispose()


def test_members_cannot_move_repos_out_of_the_org(server: BastionServer) -> None:
    admin, admin_token = server.create_user()
    writer, writer_token = server.create_user()
    contributor, contributor_token = server.create_user()
    org = _org(server, admin)
    server.admin("add-member", org, writer, "--role", "write")
    server.admin("add-member", org, contributor, "--role", "contributor")
    hf_api(server, admin_token).create_repo(f"{org}/private-repo", private=True)
    hf_api(server, contributor_token).create_repo(f"{org}/own-repo", private=True)
    with _api(server, admin_token) as a, _api(server, writer_token) as w, _api(server, contributor_token) as c:
        for client, who, repo in ((w, writer, "private-repo"), (c, contributor, "own-repo")):
            resp = _move(client, f"{org}/{repo}", f"{who}/{repo}")
            assert resp.status_code == 403, (who, resp.status_code, resp.text)
            assert f"only administrators of the organization {org!r}" in resp.headers["x-error-message"]
            assert a.get(f"/api/models/{org}/{repo}").status_code == 200  # still the org's
            assert client.get(f"/api/models/{who}/{repo}").status_code == 404
        # Renaming inside the org stays with the members who may manage the repo, and keeps it in the org.
        assert _move(w, f"{org}/private-repo", f"{org}/renamed").status_code == 200
        info = a.get(f"/api/models/{org}/renamed").json()
        assert info["private"] is True and info["author"] == org
        assert _move(w, f"{org}/renamed", f"{org}/private-repo").status_code == 200
        # The org's administrators may transfer it (audited), as on the Hub.
        resp = _move(a, f"{org}/private-repo", f"{admin}/taken-out")
        assert resp.status_code == 200, resp.text
        assert a.get(f"/api/models/{admin}/taken-out").json()["private"] is True
    assert _audited_moves(server, f"{org}/private-repo")[-1] == {"from": f"{org}/private-repo",
                                                                 "to": f"{admin}/taken-out"}


def test_private_only_cannot_be_bypassed_by_moving_out_and_back(server: BastionServer) -> None:
    admin, admin_token = server.create_user()
    contributor, contributor_token = server.create_user()
    org = _org(server, admin)
    server.admin("add-member", org, contributor, "--role", "contributor")
    with _api(server, admin_token) as a, _api(server, contributor_token) as c:
        assert a.put(f"/api/organizations/{org}/settings", json={"repoVisibility": "private_only"}).status_code == 200
        hf_api(server, contributor_token).create_repo(f"{org}/model", private=True)
        # The attack: out, public, back in. It stops at the first step.
        resp = _move(c, f"{org}/model", f"{contributor}/model")
        assert resp.status_code == 403, resp.text
        assert c.put(f"/api/models/{org}/model/settings", json={"private": False}).status_code == 403
        # A public repo is refused at the door of a private-only org, whoever moves it (the org's admins
        # too, as for creating one): it is not silently made private either.
        hf_api(server, contributor_token).create_repo(f"{contributor}/public", private=False)
        hf_api(server, admin_token).create_repo(f"{admin}/public", private=False)
        for client, who in ((c, contributor), (a, admin)):
            resp = _move(client, f"{who}/public", f"{org}/from-{who}")
            assert resp.status_code == 403 and "allows only private repositories" in resp.headers["x-error-message"]
            assert client.get(f"/api/models/{who}/public").json()["private"] is False
            assert a.get(f"/api/models/{org}/from-{who}").status_code == 404
        # Made private first, it may come in (the contributor may create in the org), and it stays private.
        assert c.put(f"/api/models/{contributor}/public/settings", json={"private": True}).status_code == 200
        assert _move(c, f"{contributor}/public", f"{org}/from-{contributor}").status_code == 200
        assert a.get(f"/api/models/{org}/from-{contributor}").json()["private"] is True


def test_the_destination_must_accept_the_repo_and_its_policies_bind_the_mover(server: BastionServer) -> None:
    admin, admin_token = server.create_user()
    other_admin, other_token = server.create_user()
    source, dest = _org(server, admin), _org(server, other_admin)
    for repo in ("m", "m2"):
        hf_api(server, admin_token).create_repo(f"{source}/{repo}", private=True)
    with _api(server, admin_token) as a, _api(server, other_token) as o:
        # Admin of the source, nobody at the destination: refused, the repo stays.
        resp = _move(a, f"{source}/m", f"{dest}/m")
        assert resp.status_code == 403 and "cannot create repositories" in resp.headers["x-error-message"]
        # Readers cannot bring repos in either.
        server.admin("add-member", dest, admin, "--role", "read")
        assert _move(a, f"{source}/m", f"{dest}/m").status_code == 403
        server.admin("add-member", dest, admin, "--role", "write")
        assert _move(a, f"{source}/m", f"{dest}/m").status_code == 200
        assert o.get(f"/api/models/{dest}/m").json()["private"] is True  # the new org's admins hold it now
        old = a.get(f"/api/models/{source}/m")  # the old name redirects whoever may read the repo
        assert old.status_code == 307 and old.headers["location"] == f"/api/models/{dest}/m"
        # The destination's 2FA requirement binds the mover like any member creating there.
        assert o.put(f"/api/organizations/{dest}/settings", json={"require2fa": True}).status_code == 200
        resp = _move(a, f"{source}/m2", f"{dest}/m2")
        assert resp.status_code == 403 and "requires two-factor" in resp.headers["x-error-message"]
        assert a.get(f"/api/models/{source}/m2").status_code == 200


def test_a_token_must_reach_both_ends(server: BastionServer) -> None:
    admin, _ = server.create_user()
    org = _org(server, admin)
    hf_api(server, server.admin("create-token", admin, "--name", "w", "--role", "write").stdout.strip()
           ).create_repo(f"{org}/scoped", private=True)
    org_only = server.admin("create-token", admin, "--name", "fg", "--role", "fineGrained",
                          "--scope", f"org:{org}=repo.write").stdout.strip()
    with _api(server, org_only) as t:
        resp = _move(t, f"{org}/scoped", f"{admin}/scoped")  # the token does not reach the user's namespace
        assert resp.status_code == 403 and "fine-grained token has no scope" in resp.headers["x-error-message"]
        assert t.get(f"/api/models/{org}/scoped").status_code == 200
