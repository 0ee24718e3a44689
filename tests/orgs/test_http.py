"""Organizations over HTTP against a real server (strict authz): the CLI contract, whoami-v2, the Hub's
role and resource-group APIs, invitations by e-mail, 2FA and token policies with the Hub's 403 texts."""

from __future__ import annotations

import secrets

import httpx
import pytest

from bastion.authz.policy import TOKEN_APPROVAL_REQUIRED, TOKEN_REVOKED_BY_ORG
from tests.accounts.fixtures import MailSink, create_password_user, link_in
from tests.conftest import BastionServer, hf_api


def _api(server: BastionServer, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def _org(server: BastionServer, owner: str, fullname: str = "") -> str:
    name = f"org{secrets.token_hex(3)}"
    server.admin("create-org", name, "--owner", owner, *(["--fullname", fullname] if fullname else []))
    return name


def _fg(server: BastionServer, user: str, scope: str) -> str:
    return server.admin("create-token", user, "--name", f"fg{secrets.token_hex(2)}", "--role", "fineGrained",
                      "--scope", scope).stdout.strip()


def test_cli_contract_and_whoami_orgs(web_server: BastionServer) -> None:
    owner, token = create_password_user(web_server)
    member, member_token = create_password_user(web_server)
    org = _org(web_server, owner, "Acme Research")
    web_server.admin("add-member", org, member, "--role", "contributor")
    whoami = hf_api(web_server, member_token).whoami()
    assert [(o["name"], o["fullname"], o["roleInOrg"]) for o in whoami["orgs"]] == [(org, "Acme Research",
                                                                                    "contributor")]
    web_server.admin("add-member", org, member, "--role", "write")  # a role change for a member
    assert hf_api(web_server, member_token).whoami()["orgs"][0]["roleInOrg"] == "write"
    bad = web_server.admin("add-member", org, member, "--role", "owner", check=False)
    assert bad.returncode != 0
    taken = web_server.admin("create-org", owner, "--owner", owner, check=False)
    assert taken.returncode != 0 and "already taken" in taken.stderr
    with _api(web_server, token) as c:
        members = c.get(f"/api/organizations/{org}/members").json()
        assert {m["user"]: m["role"] for m in members} == {owner: "admin", member: "write"}


def test_roles_resource_groups_and_repo_access(web_server: BastionServer) -> None:
    owner, owner_token = create_password_user(web_server)
    member, member_token = create_password_user(web_server)
    org = _org(web_server, owner)
    web_server.admin("add-member", org, member, "--role", "read")
    admin_api, member_api = hf_api(web_server, owner_token), hf_api(web_server, member_token)
    admin_api.create_repo(f"{org}/secret", private=True)
    assert member_api.model_info(f"{org}/secret").private  # read role: reads private root repos
    with pytest.raises(Exception, match="403|write access|does not allow"):
        member_api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=f"{org}/secret")
    with _api(web_server, owner_token) as c, _api(web_server, member_token) as m:
        group = c.post(f"/api/organizations/{org}/resource-groups", json={"name": "vision"}).json()
        assert len(group["id"]) == 24
        created = c.post("/api/repos/create", json={"name": "grouped", "organization": org, "private": True,
                                                    "resourceGroupId": group["id"]})
        assert created.status_code == 200, created.text
        # a private repo in a group: invisible to a member outside the group (a plain 404)
        assert m.get(f"/api/models/{org}/grouped").status_code == 404
        assert f"{org}/grouped" not in [r["id"] for r in m.get("/api/models", params={"author": org}).json()]
        # nor named in the group's details (admins see it)
        detail = f"/api/organizations/{org}/resource-groups/{group['id']}"
        assert m.get(detail).json()["repos"] == []
        assert [r["name"] for r in c.get(detail).json()["repos"]] == [f"{org}/grouped"]
        # the Hub's role API: the member gets write in the group, stays read at the root
        put = c.put(f"/api/organizations/{org}/members/{member}/role",
                    json={"role": "read", "resourceGroups": [{"id": group["id"], "role": "write"}]})
        assert put.status_code == 200, put.text
        assert m.get(f"/api/models/{org}/grouped").status_code == 200
        info = member_api.model_info(f"{org}/grouped", expand=["resourceGroup"])
        assert info.resource_group["id"] == group["id"] and info.resource_group["name"] == "vision"
        assert member_api.model_info(f"{org}/grouped").resource_group["numUsers"] == 1
        page = httpx.get(f"{web_server.url}/{org}", headers={"accept": "text/html"}, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == f"/organizations/{org}"
        member_api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=f"{org}/grouped")
        # The CLI contract: a fine-grained scope names the group as ORG/NAME; the token stores its id.
        scoped = _fg(web_server, member, f"resource-group:{org}/Vision=repo.write")
        scoped_api = hf_api(web_server, scoped)
        assert scoped_api.whoami()["auth"]["accessToken"]["fineGrained"]["scoped"] == [
            {"entity": {"type": "resource-group", "name": f"{org}/{group['id']}"}, "permissions": ["repo.write"]}]
        scoped_api.upload_file(path_or_fileobj=b"y", path_in_repo="b.txt", repo_id=f"{org}/grouped")
        with pytest.raises(Exception, match="Repository Not Found"):  # outside its scope a private repo is invisible
            scoped_api.upload_file(path_or_fileobj=b"y", path_in_repo="b.txt", repo_id=f"{org}/secret")
        unknown = web_server.admin("create-token", member, "--name", "x", "--role", "fineGrained",
                                 "--scope", f"resource-group:{org}/nope=repo.write", check=False)
        assert unknown.returncode != 0 and f"No resource group 'nope' in organization '{org}'" in unknown.stderr
        # moving the root repo into the group needs admin rights on the group: denied, then allowed
        move = m.post(f"/api/models/{org}/secret/resource-group", json={"resourceGroupId": group["id"]})
        assert move.status_code == 403, move.text
        move = c.post(f"/api/models/{org}/secret/resource-group", json={"resourceGroupId": group["id"]})
        assert move.status_code == 200 and move.json()["resourceGroup"]["name"] == "vision"
        # only admins change roles
        assert m.put(f"/api/organizations/{org}/members/{owner}/role", json={"role": "read"}).status_code == 403
        # an empty resourceGroups list removes every group membership
        c.put(f"/api/organizations/{org}/members/{member}/role", json={"role": "read", "resourceGroups": []})
        assert m.get(f"/api/models/{org}/grouped").status_code == 404
        assert c.delete(f"/api/organizations/{org}/resource-groups/{group['id']}").status_code == 409  # not empty


def test_invitation_by_email(web_server: BastionServer, mail_sink: MailSink) -> None:
    owner, owner_token = create_password_user(web_server)
    guest, guest_token = create_password_user(web_server)
    org = _org(web_server, owner)
    with _api(web_server, owner_token) as c, _api(web_server, guest_token) as g:
        sent = c.post(f"/api/organizations/{org}/invitations", json={"email": f"{guest}@example.com",
                                                                     "role": "write"})
        assert sent.status_code == 201, sent.text
        assert g.post(f"/api/organizations/{org}/invitations", json={"email": "x@example.com"}).status_code == 403
        link = link_in(mail_sink.wait_for(f"{guest}@example.com", f"join {org}"))
        secret = link.rsplit("/", 1)[1]
        assert g.post(f"/api/organizations/invitations/{secret}/accept").json() == {"organization": org}
        assert {m["user"]: m["role"] for m in c.get(f"/api/organizations/{org}/members").json()}[guest] == "write"
        assert g.post(f"/api/organizations/invitations/{secret}/accept").status_code == 404  # used once
        assert g.post(f"/api/organizations/{org}/leave").status_code == 200


def test_two_factor_requirement_and_hidden_members(web_server: BastionServer) -> None:
    owner, owner_token = create_password_user(web_server)
    member, member_token = create_password_user(web_server)
    org = _org(web_server, owner)
    web_server.admin("add-member", org, member, "--role", "write")
    hf_api(web_server, owner_token).create_repo(f"{org}/private", private=True)
    hf_api(web_server, owner_token).create_repo(f"{org}/public", private=False)
    with _api(web_server, owner_token) as c, _api(web_server, member_token) as m, _api(web_server, None) as anon:
        assert anon.get(f"/api/organizations/{org}/members").status_code == 200
        assert c.put(f"/api/organizations/{org}/settings", json={"require2fa": True, "hideMembers": True}).status_code \
            == 200
        assert anon.get(f"/api/organizations/{org}/members").status_code in (401, 403)
        resp = m.get(f"/api/models/{org}/private")
        assert resp.status_code == 403 and "requires two-factor authentication" in resp.headers["x-error-message"]
        assert m.get(f"/api/models/{org}/public").status_code == 200  # public stays public
        # the admin has no second factor either: locked out of settings too, told why
        resp = c.get(f"/api/organizations/{org}/settings")
        assert resp.status_code == 403 and "two-factor" in resp.headers["x-error-message"]


def test_token_policies_with_the_hubs_texts(web_server: BastionServer, mail_sink: MailSink) -> None:
    owner, owner_token = create_password_user(web_server)
    member, member_token = create_password_user(web_server)
    org = _org(web_server, owner)
    web_server.admin("add-member", org, member, "--role", "write")
    hf_api(web_server, owner_token).create_repo(f"{org}/m", private=True)
    admin_fg = _fg(web_server, owner, f"org:{org}=org.write,repo.write")
    with _api(web_server, owner_token) as plain:
        assert plain.put(f"/api/organizations/{org}/settings", json={"tokenPolicy": "fine_grained"}).status_code == 200
        resp = plain.get(f"/api/organizations/{org}/settings")  # the policy binds the admin's own write token too
        assert resp.status_code == 403 and "only fine-grained tokens" in resp.headers["x-error-message"]
    with _api(web_server, admin_fg) as c:
        with _api(web_server, member_token) as m:
            resp = m.get(f"/api/models/{org}/m")
            assert resp.status_code == 403 and "only fine-grained tokens" in resp.headers["x-error-message"]
        assert c.put(f"/api/organizations/{org}/settings", json={"tokenPolicy": "approval"}).status_code == 200
        assert c.get(f"/api/organizations/{org}/settings").status_code == 200  # an admin's token: auto-approved
        fg = _fg(web_server, member, f"org:{org}=repo.write")
        mail_sink.wait_for(f"{owner}@example.com", "needs approval")
        with _api(web_server, fg) as f:
            resp = f.get(f"/api/models/{org}/m")
            assert resp.status_code == 403 and resp.headers["x-error-message"] == TOKEN_APPROVAL_REQUIRED
            listed = c.get(f"/api/organizations/{org}/settings/tokens").json()
            (pending,) = [t for t in listed if t["user"] == member and t["role"] == "fineGrained"]
            assert [t["state"] for t in listed if t["user"] == member and t["role"] == "write"] == ["refused"]
            assert pending["state"] == "pending" and pending["scoped"][0]["entity"]["name"] == org
            assert {t["state"] for t in c.get(f"/api/organizations/{org}/settings/tokens").json()
                    if t["user"] == owner} == {"refused", "approved"}  # its write token; its fine-grained one
            assert c.post(f"/api/organizations/{org}/settings/tokens/{pending['id']}/approve").json()["state"] \
                == "approved"
            assert f.get(f"/api/models/{org}/m").status_code == 200
            mail_sink.wait_for(f"{member}@example.com", "approved")
            c.post(f"/api/organizations/{org}/settings/tokens/{pending['id']}/deny")
            assert f.get(f"/api/models/{org}/m").status_code == 403
            resp = c.post(f"/api/organizations/{org}/settings/tokens/revoke", json={"token": fg})
            assert resp.json()["state"] == "revoked"
            resp = f.get(f"/api/models/{org}/m")
            assert resp.status_code == 403 and resp.headers["x-error-message"] == TOKEN_REVOKED_BY_ORG
            assert c.post(f"/api/organizations/{org}/settings/tokens/{pending['id']}/approve").status_code == 409
    # a member cannot see or decide tokens, whatever its token
    member_fg = _fg(web_server, member, f"org:{org}=org.write")
    with _api(web_server, member_fg) as f:
        assert f.get(f"/api/organizations/{org}/settings/tokens").status_code == 403
