"""Finding 9, second half (issue 15): commits Bastion signs with its instance key (API commits,
super-squash) always satisfied "require signed commits", so a squash on a covered branch replaced its
history with one instance-signed commit. Whether they do is now a per-rule repo setting,
`requireSignedCommitsAcceptInstance` (on by default: an API commit is made by an authenticated writer);
off, API commits and super-squash on a covered branch are refused with a 403 that names the rule.
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api


def test_instance_signed_commits_follow_the_rule_setting(server: BastionServer) -> None:
    owner, token = server.create_user()
    repo_id = f"{owner}/r{secrets.token_hex(3)}"
    api = hf_api(server, token)
    api.create_repo(repo_id)
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60) as c:
        assert c.put(f"/api/models/{repo_id}/settings", json={"requireSignedCommits": True}).status_code == 200
        settings = c.get(f"/api/models/{repo_id}/settings").json()
        assert settings["requireSignedCommitsAcceptInstance"] is True  # the default
        accepted = api.upload_file(path_or_fileobj=b"one\n", path_in_repo="one.txt", repo_id=repo_id)

        bad = c.put(f"/api/models/{repo_id}/settings", json={"requireSignedCommitsAcceptInstance": "no"})
        assert bad.status_code == 400
        assert c.put(f"/api/models/{repo_id}/settings",
                     json={"requireSignedCommitsAcceptInstance": False}).status_code == 200
        assert c.get(f"/api/models/{repo_id}/settings").json()["requireSignedCommitsAcceptInstance"] is False

        with pytest.raises(HfHubHTTPError) as refused:
            api.upload_file(path_or_fileobj=b"two\n", path_in_repo="two.txt", repo_id=repo_id)
        assert refused.value.response.status_code == 403
        message = refused.value.response.headers["x-error-message"]
        assert "signed by the instance key" in message and "requireSignedCommitsAcceptInstance" in message
        squash = c.post(f"/api/models/{repo_id}/super-squash/main", json={"message": "squash"})
        assert squash.status_code == 403 and "requireSignedCommitsAcceptInstance" in squash.headers["x-error-message"]
        assert api.list_repo_commits(repo_id)[0].commit_id == accepted.oid

        # A branch the rule does not cover takes API commits as before.
        assert c.put(f"/api/models/{repo_id}/settings", json={"requireSignedCommitsBranches": ["release/*"]}
                     ).status_code == 200
        api.upload_file(path_or_fileobj=b"three\n", path_in_repo="three.txt", repo_id=repo_id)
