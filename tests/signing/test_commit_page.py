"""The web commit page, /{repo}/commit/{sha} (and /datasets/…, /spaces/…): message, people, parents,
the signature verdict with its reason, the changed files; REPO_READ like every repo page.
"""

from __future__ import annotations

import re

import httpx
from markupsafe import escape

from tests.conftest import BastionServer
from tests.gitserver.conftest import RepoHandle, make_repo
from tests.signing.conftest import SshKey, Work, api
from tests.signing.test_rules_and_instance import head_of
from tests.signing.test_verification import add_ssh

HTML = {"Accept": "text/html"}


def page(server: BastionServer, repo: RepoHandle, sha: str, token: str | None = None) -> httpx.Response:
    return api(server, "GET", f"/{repo.prefix}{repo.repo_id}/commit/{sha}", token, headers=HTML)


def test_commit_page_shows_verdicts_people_parents_and_files(server: BastionServer, work: Work,
                                                             ssh_key: SshKey) -> None:
    key = add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    base = head_of(server, work.repo)
    (work.path / "keep.txt").write_text("one\n")
    (work.path / "gone.txt").write_text("bye\n")
    verified = work.commit("a.txt")  # adds keep.txt, gone.txt and a.txt
    (work.path / "keep.txt").write_text("two\n")
    (work.path / "gone.txt").unlink()
    work.configure(user__email="stranger@example.org")
    work.git("add", "-A", cwd=work.path)
    work.git("commit", "-q", "-S", "-m", "Edit <script>alert(1)</script>\n\nBody line & more", cwd=work.path)
    unverified = work.head()
    unsigned = work.commit("plain.txt", sign=False)
    work.push()
    repo = work.repo

    # A verified commit: the badge, the signer and key, its parent, the files it added (linked at it).
    resp = page(server, repo, verified)
    assert resp.status_code == 200, resp.text
    text = resp.text
    assert text.count('class="signature verified"') == 1 and 'class="signature unverified"' not in text
    assert f"Signed by {repo.owner}" in text and key["fingerprint"] in text
    assert f'<code id="commit-id">{verified}</code>' in text
    assert f'href="/{repo.repo_id}/commit/{base}"' in text  # the parent
    for name in ("a.txt", "keep.txt", "gone.txt"):
        assert f'<a href="/{repo.repo_id}/blob/{verified}/{name}">{name}</a>' in text
    assert text.count('<tr class="change-added">') == 3 and "Changed files (3)" in text
    assert "Signing Tester" in text  # author and committer names

    # An unverified one: the reason, escaped; modified and deleted files (a deletion links to the parent's file).
    text = page(server, repo, unverified).text
    assert 'class="signature unverified"' in text
    reason = "committer e-mail stranger@example.org is not a verified e-mail of the key's owner"
    assert str(escape(reason)) in text
    assert '<dd id="signature-reason">' + str(escape(reason)) + "</dd>" in text
    assert "<script>alert(1)</script>" not in text and "Edit &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Body line &amp; more" in text
    assert f'<tr class="change-modified"><td><span class="badge">modified</span></td>\n      <td><a href="/{repo.repo_id}/blob/{unverified}/keep.txt">' in text
    assert f'<a href="/{repo.repo_id}/blob/{verified}/gone.txt">gone.txt</a>' in text
    assert '<tr class="change-deleted">' in text

    # Unsigned: no badge, said plainly. An abbreviated id names the same commit.
    text = page(server, repo, unsigned[:10]).text
    assert "<details" not in text and "This commit is not signed." in text
    assert f'<code id="commit-id">{unsigned}</code>' in text

    # The commit list links each commit to its page.
    listing = api(server, "GET", f"/{repo.repo_id}/commits/main", None, headers=HTML).text
    for sha in (verified, unverified, unsigned, base):
        assert f'href="/{repo.repo_id}/commit/{sha}"' in listing


def test_commit_page_of_a_root_commit_under_the_dataset_prefix(server: BastionServer) -> None:
    repo = make_repo(server, repo_type="dataset")
    sha = head_of_type(server, repo)
    resp = page(server, repo, sha)
    assert resp.status_code == 200, resp.text
    assert "none (first commit)" in resp.text
    assert f'href="/datasets/{repo.repo_id}/blob/{sha}/.gitattributes"' in resp.text
    # The instance signs the commits it writes: verified, by the instance key.
    assert 'class="signature verified"' in resp.text and "Bastion (instance key)" in resp.text
    # The model prefix does not serve a dataset.
    assert api(server, "GET", f"/{repo.repo_id}/commit/{sha}", repo.token, headers=HTML).status_code == 404


def head_of_type(server: BastionServer, repo: RepoHandle) -> str:
    kind = {"": "models", "datasets/": "datasets", "spaces/": "spaces"}[repo.prefix]
    refs = api(server, "GET", f"/api/{kind}/{repo.repo_id}/refs", repo.token).json()
    return str(next(b["targetCommit"] for b in refs["branches"] if b["name"] == "main"))


def test_private_commit_page_is_a_missing_repository_to_others(server: BastionServer) -> None:
    repo = make_repo(server, private=True)
    sha = head_of(server, repo)
    assert page(server, repo, sha, repo.token).status_code == 200
    _, stranger = server.create_user()
    missing = api(server, "GET", f"/{repo.owner}/no-such-repo/commit/{sha}", stranger, headers=HTML)
    assert missing.status_code == 404 and "Repository not found" in missing.text
    for token in (stranger, None):
        for rev in (sha, "0" * 40, "not-a-sha"):
            resp = page(server, repo, rev, token)
            assert resp.status_code == 404, (rev, resp.status_code)
            assert "Repository not found" in resp.text and sha not in resp.text


def test_unknown_and_malformed_commit_ids(server: BastionServer, repo: RepoHandle) -> None:
    unknown = page(server, repo, "0123456789abcdef0123456789abcdef01234567")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")
    assert "No commit 0123456789abcdef0123456789abcdef01234567" in unknown.text
    # A tree (or blob) is an object, not a commit.
    tree = api(server, "GET", f"/api/models/{repo.repo_id}/tree/main", repo.token)
    assert tree.status_code == 200
    blob = next(e["oid"] for e in tree.json() if e["type"] == "file")
    assert page(server, repo, blob).status_code == 404
    for bad in ("main", "HEAD", "xyz", "abc", "g" * 40, "a" * 41, "%3Cscript%3E", "a" * 5000, "..%2F..%2Fetc"):
        resp = page(server, repo, bad)
        assert 400 <= resp.status_code < 500, (bad, resp.status_code)
        assert "<script>" not in resp.text
    bad = page(server, repo, "%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert bad.status_code in (400, 404) and "<script>alert(1)" not in bad.text
    resp = page(server, repo, "zzzzzzz")
    assert resp.status_code == 400 and "expected 7 to 40 hexadecimal digits" in resp.text
    assert re.search(r"<title>[^<]*</title>", resp.text)
