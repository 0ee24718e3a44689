"""The routes added for the client's likes, duplication and own-repo listing tell nothing of private repos:
someone else's private repo answers exactly like a missing one (404 RepoNotFound), and the own-repo listing
holds only the caller's repos."""

from __future__ import annotations

import secrets

import httpx

from tests.conftest import BastionServer, hf_api

TIMEOUT = 30


def test_private_repo_is_a_missing_repo_on_likes_and_duplicate(server: BastionServer) -> None:
    owner, owner_token = server.create_user()
    stranger, stranger_token = server.create_user()
    hf_api(server, owner_token).create_repo(f"{owner}/secret", private=True)
    headers = {"authorization": f"Bearer {stranger_token}"}
    for method, suffix in (("DELETE", "like"), ("POST", "like"), ("GET", "likers"), ("POST", "duplicate"),
                           ("POST", "lfs-files/duplicate")):
        answers = []
        for repo in ("secret", "never-existed"):
            r = httpx.request(method, f"{server.url}/api/models/{owner}/{repo}/{suffix}", headers=headers,
                              json={} if method == "POST" else None, timeout=TIMEOUT)
            answers.append((r.status_code, r.headers.get("x-error-code"), r.json()))
        assert answers[0] == answers[1] and answers[0][:2] == (404, "RepoNotFound"), (method, suffix, answers)

    listed = [r.id for r in hf_api(server, stranger_token).list_user_repos()]
    assert listed == []
    assert [r.id for r in hf_api(server, owner_token).list_user_repos()] == [f"{owner}/secret"]
    assert stranger not in {r.id.split("/")[0] for r in hf_api(server, owner_token).list_user_repos()}

    # An org's listing is for its members: a stranger gets no page of its (private) repositories.
    org = f"org{secrets.token_hex(3)}"
    server.cli("admin", "create-org", org, "--owner", owner)
    hf_api(server, owner_token).create_repo(f"{org}/hidden", private=True)
    r = httpx.get(f"{server.url}/api/organizations/{org}/settings/repositories", headers=headers, timeout=TIMEOUT)
    assert r.status_code in (401, 403, 404) and "hidden" not in r.text
