"""The initial commit of a new repository is a Bastion commit like any other: signed with the
instance key, reported as verified, and accepted by `git verify-commit` against the published key.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle
from tests.signing.conftest import api, signature_of


def test_initial_commit_is_instance_signed(server: BastionServer, repo: RepoHandle, git: Git, tmp_path: Path) -> None:
    commits = hf_api(server, repo.token).list_repo_commits(repo.repo_id)
    assert len(commits) == 1
    initial = commits[0].commit_id
    key = api(server, "GET", "/api/signing-key", None).json()
    assert signature_of(server, repo, initial) == {"status": "verified", "type": "ssh", "keyId": key["fingerprint"],
                                                   "signer": "Bastion (instance key)", "reason": None}

    allowed = tmp_path / "allowed_signers"
    allowed.write_text(api(server, "GET", "/api/signing-key?format=allowed-signers", None).text)
    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))
    raw = git("cat-file", "commit", initial, cwd=work).stdout
    assert "\ngpgsig -----BEGIN SSH SIGNATURE-----" in raw
    ok = git("-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", initial, cwd=work, check=False)
    assert ok.returncode == 0, ok.stderr
    assert key["fingerprint"] in ok.stderr
    # Still the same initial commit otherwise: one file, the default .gitattributes.
    assert git("ls-tree", "--name-only", initial, cwd=work).stdout.split() == [".gitattributes"]
