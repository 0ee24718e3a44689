"""A moved repo's old name redirects (307, the Hub's behaviour) only for callers who may read the repo.

Whoever may not read a private moved repo gets, at its old name, exactly what a name no repo ever had
answers (404 RepoNotFound, same headers and body, no Location): the old name is no oracle for where a
private repo went, nor for the fact that one was there.
"""

from __future__ import annotations

import secrets

import httpx

from tests.conftest import BastionServer, hf_api

TIMEOUT = 30


def _answer(resp: httpx.Response) -> tuple[int, str | None, str | None, str | None, str]:
    return (resp.status_code, resp.headers.get("x-error-code"), resp.headers.get("x-error-message"),
            resp.headers.get("location"), resp.text)


def test_old_name_of_a_private_moved_repo_is_no_oracle(server: BastionServer) -> None:
    owner, owner_token = server.create_user()
    _stranger, stranger_token = server.create_user()
    api = hf_api(server, owner_token)
    old, new = f"{owner}/secret-{secrets.token_hex(3)}", f"{owner}/moved-{secrets.token_hex(3)}"
    api.create_repo(old, private=True)
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="w.txt", repo_id=old)
    api.move_repo(old, new)
    never = f"{owner}/never-{secrets.token_hex(3)}"

    def paths(repo_id: str) -> list[tuple[str, str]]:
        return [("GET", f"/api/models/{repo_id}"), ("GET", f"/api/models/{repo_id}/tree/main"),
                ("HEAD", f"/{repo_id}/resolve/main/w.txt"), ("GET", f"/{repo_id}/resolve/main/w.txt"),
                ("GET", f"/api/models/{repo_id}/revision/main"), ("GET", f"/api/models/{repo_id}/auth-check"),
                ("GET", f"/api/models/{repo_id}/lfs-files")]

    for token in (None, stranger_token):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as client:
            for (method, path), (_, other) in zip(paths(old), paths(never), strict=True):
                seen, expected = _answer(client.request(method, path)), _answer(client.request(method, other))
                assert seen[0] == 404 and seen[3] is None, (path, seen)
                assert seen[:4] == expected[:4] and seen[4].replace(old, never) == expected[4], (path, seen, expected)
    # The owner is redirected, to the repo's current name.
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {owner_token}"},
                      timeout=TIMEOUT) as client:
        resp = client.get(f"/api/models/{old}/tree/main")
        assert resp.status_code == 307 and resp.headers["location"] == f"/api/models/{new}/tree/main"


def test_a_new_repo_at_the_old_name_takes_precedence_and_redirects_nothing(server: BastionServer) -> None:
    """Someone else taking a freed name gets their own repo there, never the moved one's contents."""
    owner, owner_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", owner)
    api = hf_api(server, owner_token)
    old, new = f"{org}/model", f"{owner}/model-{secrets.token_hex(3)}"
    api.create_repo(old, private=True)
    api.upload_file(path_or_fileobj=b"private weights", path_in_repo="w.txt", repo_id=old)
    api.move_repo(old, new)
    taker, taker_token = server.create_user()
    server.admin("add-member", org, taker, "--role", "write")
    hf_api(server, taker_token).create_repo(old)  # public, at the freed name
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {owner_token}"},
                      timeout=TIMEOUT) as client:
        resp = client.get(f"/{old}/resolve/main/w.txt")
        assert resp.status_code == 404 and resp.headers["x-error-code"] == "EntryNotFound"
        assert client.get(f"/api/models/{old}").json()["id"] == old
