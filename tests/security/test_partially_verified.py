"""Finding 4 (issue 15): "Verified" on a commit that names someone else as its author.

A commit signed by its committer with their own key, but authored as another user, showed Verified with
the other user as author (GitHub calls this partially verified); vigilant mode did not change it, and
"require signed commits" accepted it. Now a commit is `verified` only when the signer's account is both its
committer and its author: otherwise `partially_verified`, with the reason, in the API and the web badge,
and the rule refuses it.
"""

from __future__ import annotations

import httpx
from markupsafe import escape

from tests.conftest import BastionServer
from tests.gitserver.conftest import RepoHandle
from tests.signing.conftest import SshKey, Work, api, git, keys_api, repo, signature_of, ssh_key, work  # noqa: F401
from tests.signing.test_rules_and_instance import head_of, require_signed
from tests.signing.test_verification import add_ssh


def _commit_as(w: Work, name: str, author: str) -> str:
    (w.path / name).write_text(f"{name}\n")
    w.git("add", "-A", cwd=w.path)
    w.git("commit", "-q", "-S", "--author", author, "-m", f"add {name}", cwd=w.path)
    return w.head()


def _page(server: BastionServer, handle: RepoHandle, sha: str) -> httpx.Response:
    return api(server, "GET", f"/{handle.repo_id}/commit/{sha}", None, headers={"Accept": "text/html"})


def test_a_commit_authored_as_someone_else_is_partially_verified(server: BastionServer, work: Work,  # noqa: F811
                                                                 ssh_key: SshKey) -> None:  # noqa: F811
    alice, alice_token = server.create_user()
    alice_email = f"{alice}@example.com"
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    own = work.commit("own.txt")
    forged = _commit_as(work, "forged.txt", f"{alice} <{alice_email}>")
    work.push()

    assert signature_of(server, work.repo, own)["status"] == "verified"
    sig = signature_of(server, work.repo, forged)
    reason = f"authored by {alice_email}, not by the signer"
    assert sig == {"status": "partially_verified", "type": "ssh", "keyId": sig["keyId"], "signer": work.repo.owner,
                   "reason": reason}
    listed = api(server, "GET", f"/api/models/{work.repo.repo_id}/commits/main", work.repo.token).json()
    assert next(c for c in listed if c["id"] == forged)["authors"] == [{"user": alice}]

    # The web badge says so too (not "Verified").
    text = _page(server, work.repo, forged).text
    assert 'class="signature partially_verified"' in text and 'class="signature verified"' not in text
    assert "Partially verified" in text and str(escape(reason)) in text
    assert 'class="signature verified"' in _page(server, work.repo, own).text

    # Alice's vigilant mode shows it as such, never as verified.
    assert keys_api(server, alice_token, "PUT", "/api/settings/signing", json={"vigilantMode": True}).status_code == 200
    assert signature_of(server, work.repo, forged)["status"] == "partially_verified"


def test_require_signed_commits_refuses_a_partially_verified_commit(server: BastionServer, work: Work,  # noqa: F811
                                                                    ssh_key: SshKey) -> None:  # noqa: F811
    alice, _ = server.create_user()
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    require_signed(server, work.repo, True)
    before = head_of(server, work.repo)
    forged = _commit_as(work, "forged.txt", f"Alice <{alice}@example.com>")
    pushed = work.push(check=False)
    assert pushed.returncode != 0, pushed.stderr
    assert f"commit {forged[:12]} is partially_verified (authored by {alice}@example.com" in pushed.stderr
    assert head_of(server, work.repo) == before
