"""The "require signed commits" rule on pushes and API commits, and the instance key: Bastion's
own commits are signed, show as verified, and `git verify-commit` accepts them with the published key.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle
from tests.signing.conftest import GpgHome, SshKey, Work, api, signature_of
from tests.signing.test_verification import add_gpg, add_ssh


def require_signed(server: BastionServer, repo: RepoHandle, on: bool, branches: list[str] | None = None) -> None:
    body: dict[str, object] = {"requireSignedCommits": on}
    if branches is not None:
        body["requireSignedCommitsBranches"] = branches
    resp = api(server, "PUT", f"/api/models/{repo.repo_id}/settings", repo.token, json=body)
    assert resp.status_code == 200, resp.text


def head_of(server: BastionServer, repo: RepoHandle, branch: str = "main") -> str:
    refs = api(server, "GET", f"/api/models/{repo.repo_id}/refs", repo.token).json()
    return next(b["targetCommit"] for b in refs["branches"] if b["name"] == branch)


def test_rule_rejects_unsigned_and_unverified_pushes(server: BastionServer, work: Work, gpg_home: GpgHome) -> None:
    require_signed(server, work.repo, True)
    before = head_of(server, work.repo)
    unsigned = work.commit("a.txt", sign=False)
    pushed = work.push(check=False)
    assert pushed.returncode != 0
    assert f"commit {unsigned[:12]} is unsigned" in pushed.stderr
    assert "requires signed commits" in pushed.stderr
    assert head_of(server, work.repo) == before

    # Signed, but with a key nobody added: unverified, also refused, with the reason.
    fpr = gpg_home.generate(f"Owner <{work.repo.owner}@example.com>")
    work.use_gpg(gpg_home, fpr)
    work.git("reset", "-q", "--hard", before, cwd=work.path)
    unknown = work.commit("b.txt")
    pushed = work.push(check=False)
    assert pushed.returncode != 0 and f"commit {unknown[:12]} is unverified (unknown key" in pushed.stderr
    assert head_of(server, work.repo) == before


def test_rule_accepts_verified_pushes(server: BastionServer, work: Work, ssh_key: SshKey) -> None:
    require_signed(server, work.repo, True)
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    work.commit("a.txt")
    second = work.commit("b.txt")
    work.push()
    assert head_of(server, work.repo) == second
    assert signature_of(server, work.repo, second)["status"] == "verified"


def test_rule_limited_to_branch_patterns(server: BastionServer, work: Work) -> None:
    require_signed(server, work.repo, True, ["release/*"])
    work.commit("a.txt", sign=False)
    work.push("main")  # not covered by the rule
    pushed = work.push("release/1.0", check=False)
    assert pushed.returncode != 0 and "requires signed commits" in pushed.stderr
    bad = api(server, "PUT", f"/api/models/{work.repo.repo_id}/settings", work.repo.token,
              json={"requireSignedCommitsBranches": "main"})
    assert bad.status_code == 400


def test_rule_accepts_api_commits_signed_by_the_instance(server: BastionServer, repo: RepoHandle) -> None:
    require_signed(server, repo, True)
    info = hf_api(server, repo.token).upload_file(path_or_fileobj=b"hello\n", path_in_repo="hello.txt",
                                                  repo_id=repo.repo_id)
    assert head_of(server, repo) == info.oid
    key = api(server, "GET", "/api/signing-key", None).json()
    assert signature_of(server, repo, info.oid) == {"status": "verified", "type": "ssh", "keyId": key["fingerprint"],
                                                    "signer": "Bastion (instance key)", "reason": None}


def test_instance_signed_commits_verify_with_git(server: BastionServer, repo: RepoHandle, git: Git,
                                                 tmp_path: Path, ssh_key: SshKey) -> None:
    api_ = hf_api(server, repo.token)
    first = api_.upload_file(path_or_fileobj=b"one\n", path_in_repo="one.txt", repo_id=repo.repo_id).oid
    second = api_.upload_file(path_or_fileobj=b"two\n", path_in_repo="two.txt", repo_id=repo.repo_id).oid
    published = api(server, "GET", "/api/signing-key", None)
    assert published.status_code == 200
    key = published.json()
    assert key["type"] == "ssh" and key["publicKey"].startswith("ssh-ed25519 ")
    text = api(server, "GET", "/api/signing-key?format=allowed-signers", None).text
    assert text == key["allowedSigners"]
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(text)

    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))
    for sha in (first, second):
        ok = git("-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", sha, cwd=work, check=False)
        assert ok.returncode == 0, ok.stderr
        assert 'Good "git" signature for bastion-instance with ED25519 key' in ok.stderr
        assert key["fingerprint"] in ok.stderr

    # The same commits against another key's allowed-signers: git refuses them.
    other = tmp_path / "other_signers"
    other.write_text(f"bastion-instance {ssh_key.public}")
    bad = git("-c", f"gpg.ssh.allowedSignersFile={other}", "verify-commit", second, cwd=work, check=False)
    assert bad.returncode != 0
    # The published key is the one in the data dir, derived by ssh-keygen itself.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(server.data_dir / "signing" / "instance_ed25519")],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    assert derived.split()[:2] == key["publicKey"].split()[:2]


def test_squash_commits_are_instance_signed(server: BastionServer, repo: RepoHandle) -> None:
    api_ = hf_api(server, repo.token)
    api_.upload_file(path_or_fileobj=b"x\n", path_in_repo="x.txt", repo_id=repo.repo_id)
    api_.super_squash_history(repo_id=repo.repo_id)
    squashed = head_of(server, repo)
    sig = signature_of(server, repo, squashed)
    assert sig["status"] == "verified" and sig["signer"] == "Bastion (instance key)"


def test_commits_listing_via_huggingface_hub_still_works(server: BastionServer, work: Work,
                                                         gpg_home: GpgHome) -> None:
    fpr = gpg_home.generate(f"Owner <{work.repo.owner}@example.com>")
    add_gpg(server, work.repo.token, gpg_home.export(fpr))
    work.use_gpg(gpg_home, fpr)
    sha = work.commit("a.txt")
    work.push()
    commits = hf_api(server, work.repo.token).list_repo_commits(work.repo.repo_id)
    assert commits[0].commit_id == sha


def test_web_commit_list_shows_badges_with_reasons(server: BastionServer, work: Work, ssh_key: SshKey) -> None:
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    work.commit("signed.txt")
    work.configure(user__signingkey=str(ssh_key.path), user__email="stranger@example.org")
    work.commit("claims-a-stranger.txt")
    work.commit("plain.txt", sign=False)
    work.push()
    page = api(server, "GET", f"/{work.repo.repo_id}/commits/main", None, headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    html = page.text
    # The owner's SSH-signed commit and the instance-signed initial commit of the repo.
    assert html.count('class="signature verified"') == 2
    assert html.count('class="signature unverified"') == 1
    assert f"Signed by {work.repo.owner}" in html
    assert "committer e-mail stranger@example.org is not a verified e-mail of the key&#39;s owner" in html
    assert html.count("<details") == 3  # the unsigned commit carries no badge
