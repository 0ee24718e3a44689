"""Finding 8 (issue 14): no answer tells a repo the caller cannot read from a missing one.

Anonymous `POST /api/models/{org}/{private}/resource-group` answered 400 (or "resource group not found") for an
existing private repo and 404 for a missing one, because the body was checked against the repo before the
authorization; `POST /api/repos/create` for the name of a private group repo the caller cannot see answered 409
with its URL. Every repo route is walked here for three callers who cannot read a private group repo.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api

OID = "a" * 64
NDJSON = (b'{"key": "header", "value": {"summary": "x"}}\n'
          b'{"key": "file", "value": {"path": "a.txt", "content": "eA==", "encoding": "base64"}}\n')


@pytest.fixture(scope="module")
def world(server: BastionServer) -> Iterator[dict[str, Any]]:
    """An org with a private repo in a resource group; a member outside the group, and an outsider."""
    admin, admin_token = server.create_user()
    member, member_token = server.create_user()
    _outsider, outsider_token = server.create_user()
    org = f"org{secrets.token_hex(4)}"
    server.admin("create-org", org, "--owner", admin)
    server.admin("add-member", org, member, "--role", "contributor")  # creates at the org root
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {admin_token}"}, timeout=60) as a:
        group = a.post(f"/api/organizations/{org}/resource-groups", json={"name": "research"}).json()
    api = hf_api(server, admin_token)
    api.create_repo(f"{org}/hidden", private=True, resource_group_id=group["id"])
    api.upload_file(path_or_fileobj=b"# hidden\n", path_in_repo="README.md", repo_id=f"{org}/hidden")
    yield {"org": org, "group": group, "admin_token": admin_token, "member": member, "member_token": member_token,
           "callers": {"anonymous": None, "outsider": outsider_token, "member outside the group": member_token}}


def _routes(org: str, repo: str) -> list[tuple[str, str, dict[str, Any]]]:
    r, api, git = f"{org}/{repo}", f"/api/models/{org}/{repo}", f"/{org}/{repo}.git"
    html = {"headers": {"accept": "text/html"}}
    return [
        ("GET", api, {}), ("GET", f"{api}/revision/main", {}), ("GET", f"{api}/tree/main", {}),
        ("POST", f"{api}/paths-info/main", {"data": {"paths": "README.md"}}), ("GET", f"{api}/refs", {}),
        ("GET", f"{api}/commits/main", {}), ("GET", f"/{r}/resolve/main/README.md", {}),
        ("HEAD", f"/{r}/resolve/main/README.md", {}),
        ("GET", f"{api}/settings", {}), ("PUT", f"{api}/settings", {"json": {"private": False}}),
        ("POST", f"{api}/branch/dev", {"json": {}}), ("DELETE", f"{api}/branch/dev", {}),
        ("POST", f"{api}/tag/main", {"json": {"tag": "v1"}}), ("DELETE", f"{api}/tag/v1", {}),
        ("POST", f"{api}/super-squash/main", {"json": {}}),
        ("POST", f"{api}/preupload/main", {"json": {"files": [{"path": "a.txt", "size": 1, "sample": ""}]}}),
        ("POST", f"{api}/commit/main", {"content": NDJSON, "headers": {"content-type": "application/x-ndjson"}}),
        ("GET", f"{api}/xet-read-token/main", {}), ("GET", f"{api}/xet-write-token/main", {}),
        ("GET", f"{api}/scan", {}), ("POST", f"{api}/scan", {}), ("GET", f"{api}/secrets", {}),
        ("POST", f"{api}/secrets/state", {"json": {"fingerprint": "f", "state": "dismissed"}}),
        ("GET", f"{api}/auth-check", {}), ("GET", f"{api}/auth-check/write", {}), ("GET", f"{api}/lfs-files", {}),
        ("POST", f"{api}/lfs-files/batch", {"json": {"deletions": {"sha": [OID], "rewriteHistory": True}}}),
        ("POST", f"{api}/lfs-files/batch", {"json": {"deletions": {"sha": "not-a-list"}}}),
        # The finding: a body that needs the repo's org (a group id of some form) must wait for the decision.
        ("POST", f"{api}/resource-group", {"json": {"resourceGroupId": "0" * 24}}),
        ("POST", f"{api}/resource-group", {"json": {"resourceGroupId": "not-an-id"}}),
        ("POST", f"{api}/resource-group", {"json": {"resourceGroupId": None}}),
        ("POST", f"/organizations/{org}/settings/repo-group", {"data": {"repo": repo, "group": "0" * 24}, **html}),
        ("POST", "/api/repos/move", {"json": {"fromRepo": r, "toRepo": f"{org}/elsewhere"}}),
        ("DELETE", "/api/repos/delete", {"json": {"name": repo, "organization": org}}),
        ("POST", f"{git}/info/lfs/objects/batch", {"json": {"operation": "download", "objects": [
            {"oid": OID, "size": 1}]}}),
        ("POST", f"{git}/info/lfs/objects/batch", {"json": {"operation": "upload", "objects": [
            {"oid": OID, "size": 1}]}}),
        ("POST", f"{git}/info/lfs/objects/verify", {"json": {"oid": OID, "size": 1}}),
        ("GET", f"{git}/info/lfs/objects/{OID}", {}),
        ("POST", f"{git}/info/lfs/locks", {"json": {"path": "a.txt"}}), ("GET", f"{git}/info/lfs/locks", {}),
        ("POST", f"{git}/info/lfs/locks/verify", {"json": {}}), ("POST", f"{git}/info/lfs/locks/1/unlock", {"json": {}}),
        ("GET", f"{git}/info/refs?service=git-upload-pack", {}),
        ("GET", f"{git}/info/refs?service=git-receive-pack", {}),
        ("POST", f"{git}/git-upload-pack", {"content": b"0000"}),
        ("GET", f"/{r}", html), ("GET", f"/{r}/tree/main", html), ("GET", f"/{r}/blob/main/README.md", html),
        ("GET", f"/{r}/commits/main", html), ("GET", f"/{r}/commit/abcdef1", html),
    ]


def _answer(resp: httpx.Response) -> tuple[int, str | None, str | None, str]:
    # Pages carry a per-browser CSRF token (64 hex digits): the only part that may differ.
    body = re.sub(r"[0-9a-f]{64}", "…", resp.text)
    return resp.status_code, resp.headers.get("x-error-code"), resp.headers.get("x-error-message"), body


def test_private_and_missing_repos_answer_alike_on_every_route(server: BastionServer, world: dict[str, Any]) -> None:
    org, missing = world["org"], f"missing-{secrets.token_hex(4)}"
    hidden, absent = _routes(org, "hidden"), _routes(org, missing)
    differences, statuses = [], set()
    for who, token in world["callers"].items():
        headers = {"authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            for (method, path, kwargs), (_, other_path, other_kwargs) in zip(hidden, absent, strict=True):
                seen = _answer(client.request(method, path, **kwargs))
                expected = _answer(client.request(method, other_path, **other_kwargs))
                if seen != expected:
                    differences.append((who, method, path, seen[:3], expected[:3]))
                statuses.add(seen[0] if "not-an-id" not in str(kwargs) else f"{seen[0]} for a malformed id")
    assert differences == []
    # Not vacuous: what they all got is "not found" (git's anonymous challenge is a 401), and a malformed
    # group id is a 400 whatever the repo, before any lookup.
    assert statuses == {401, 404, "400 for a malformed id"}
    # Nothing was changed by any of it.
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {world['admin_token']}"},
                      timeout=60) as admin:
        info = admin.get(f"/api/models/{org}/hidden").json()
        assert info["private"] is True and info["resourceGroup"]["id"] == world["group"]["id"]
        assert [b["name"] for b in admin.get(f"/api/models/{org}/hidden/refs").json()["branches"]] == ["main"]


def test_a_name_taken_by_a_repo_the_caller_cannot_read_is_refused_without_naming_it(
        server: BastionServer, world: dict[str, Any]) -> None:
    org, member = world["org"], world["member"]
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {world['member_token']}"},
                      timeout=60) as client:
        taken = client.post("/api/repos/create", json={"name": "hidden", "organization": org, "private": True})
        assert taken.status_code == 403, taken.text
        assert taken.headers["x-error-message"] == "Forbidden: you cannot create a repository with this name here"
        assert "url" not in taken.json() and "hidden" not in taken.text
        assert client.post("/api/repos/create", json={"name": f"free-{secrets.token_hex(3)}", "organization": org,
                                                      "private": True}).status_code == 200
        # Renaming onto it answers the same.
        hf_api(server, world["member_token"]).create_repo(f"{org}/mine", private=True)
        moved = client.post("/api/repos/move", json={"fromRepo": f"{org}/mine", "toRepo": f"{org}/hidden"})
        assert (moved.status_code, moved.headers["x-error-message"]) == (403, taken.headers["x-error-message"])
    # The Hub's client: exist_ok cannot turn the refusal into someone else's repo URL.
    with pytest.raises(HfHubHTTPError) as refused:
        hf_api(server, world["member_token"]).create_repo(f"{org}/hidden", private=True, exist_ok=True)
    assert refused.value.response.status_code == 403
    # Once the member may read it (a member of its group), the Hub's 409 with its URL, and exist_ok works.
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {world['admin_token']}"},
                      timeout=60) as admin:
        assert admin.post(f"/api/organizations/{org}/resource-groups/{world['group']['id']}/users",
                          json={"users": [{"user": member, "role": "read"}]}).status_code == 200
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {world['member_token']}"},
                      timeout=60) as client:
        conflict = client.post("/api/repos/create", json={"name": "hidden", "organization": org, "private": True})
        assert conflict.status_code == 409 and conflict.json()["url"] == f"{server.url}/{org}/hidden"
    assert hf_api(server, world["member_token"]).create_repo(f"{org}/hidden", exist_ok=True) == \
        f"{server.url}/{org}/hidden"
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {world['admin_token']}"},
                      timeout=60) as admin:  # leave the module's world as it was
        admin.delete(f"/api/organizations/{org}/resource-groups/{world['group']['id']}/users/{member}")
