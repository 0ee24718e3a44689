"""Issue 15, finding 6: a folder with very many entries was accepted, and the web tree page, the repo
page and `GET …/scan` rendered all of it at once (22 s, 19 MB at 100,000 entries, anonymously). Pages now
hold at most 1,000 entries with a next link (the API's in the Hub's `Link` header), and a push or commit
growing a folder, or the whole tree, past the configured limits is refused with the limit named.

Timings are measured by bench/large_folder.py, not here: these tests assert page sizes and links.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401 - fixtures

TIMEOUT = 120
MAX_ENTRIES = 3000
MAX_TOTAL = 6000
FOLDER = 2500  # more than two pages, under the limit
HTML = {"accept": "text/html"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("large-folders"), env={
        "BASTION_MAX_TREE_ENTRIES": str(MAX_ENTRIES), "BASTION_MAX_TOTAL_TREE_ENTRIES": str(MAX_TOTAL),
        "BASTION_SCANNERS": '["pickle"]'})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def owner(limited: BastionServer) -> tuple[str, str]:
    return limited.create_user()


def _repo(server: BastionServer, owner: tuple[str, str]) -> RepoHandle:
    name, token = owner
    repo_id = f"{name}/big{os.urandom(4).hex()}"
    hf_api(server, token).create_repo(repo_id)
    return RepoHandle(server, name, token, repo_id)


def _fill(work: Path, folder: str, count: int) -> None:
    (work / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (work / folder / f"f{i:05d}.txt").write_text(f"{folder} {i}\n")


def _push_folder(git: Git, repo: RepoHandle, tmp_path: Path, folders: dict[str, int]):  # noqa: F811
    work = tmp_path / f"work{os.urandom(3).hex()}"
    git("clone", "-q", repo.url(), str(work))
    for folder, count in folders.items():
        _fill(work, folder, count)
    sha = git.commit_all(work, f"{sum(folders.values())} files")
    return sha, git("push", "origin", "main", cwd=work, check=False)


@pytest.fixture(scope="module")
def big_repo(limited: BastionServer, owner: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
             git_binaries: None) -> RepoHandle:  # noqa: F811
    """A public repo whose top folder and folder `data/` each hold 2,500 entries (pushed with git)."""
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text("[user]\n\tname = Git Tester\n\temail = tester@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n")
    runner = Git({"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
                  "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "LANG": "C", "NO_PROXY": "*"})
    repo = _repo(limited, owner)
    _sha, push = _push_folder(runner, repo, tmp_path_factory.mktemp("push"), {".": FOLDER - 2, "data": FOLDER})
    assert push.returncode == 0, push.stderr
    return repo


def _rows(html: str) -> int:
    return len(re.findall(r'<a href="[^"]*/(?:blob|tree)/main/[^"]*">', html.split('id="files"', 1)[1]
                          .split("</table>", 1)[0]))


def test_folder_page_is_bounded_with_next_links(limited: BastionServer, big_repo: RepoHandle) -> None:
    base = f"{limited.url}/{big_repo.repo_id}/tree/main/data"
    seen = 0
    for page, expected in enumerate((1000, 1000, 500)):
        resp = httpx.get(f"{base}?p={page}", headers=HTML, timeout=TIMEOUT)  # anonymously: the repo is public
        assert resp.status_code == 200, resp.text[:500]
        assert _rows(resp.text) == expected
        assert f"{page * 1000 + 1}–{page * 1000 + expected} of {FOLDER} entries" in resp.text
        assert ('rel="next"' in resp.text) is (page < 2)
        assert len(resp.content) < 1_000_000
        seen += expected
    assert seen == FOLDER


def test_repo_page_is_bounded(limited: BastionServer, big_repo: RepoHandle) -> None:
    resp = httpx.get(f"{limited.url}/{big_repo.repo_id}", headers=HTML, timeout=TIMEOUT)
    assert resp.status_code == 200
    # The top folder: data/, .gitattributes and 2,498 files, folders first.
    assert _rows(resp.text) == 1000
    assert f"1–1000 of {FOLDER} entries" in resp.text and 'href="?p=1" rel="next"' in resp.text
    assert 'tree/main/data"' in resp.text


def test_scan_status_api_pages_with_link_headers(limited: BastionServer, big_repo: RepoHandle) -> None:
    url = f"{limited.url}/api/models/{big_repo.repo_id}/scan"
    paths: list[str] = []
    pages = 0
    while url:
        resp = httpx.get(url, timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["files"]) <= 1000 and {"scansDone", "filesWithIssues", "commit"} <= set(body)
        paths += [f["path"] for f in body["files"]]
        pages += 1
        link = resp.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else ""
        assert not url or url.startswith(limited.url) and 'rel="next"' in link
    assert pages == 5 and len(paths) == len(set(paths)) == 2 * FOLDER - 1  # every file; data/ is no file
    small = httpx.get(f"{limited.url}/api/models/{big_repo.repo_id}/scan/main?limit=10", timeout=TIMEOUT)
    assert len(small.json()["files"]) == 10 and "cursor=10" in small.headers["link"]
    bad = httpx.get(f"{limited.url}/api/models/{big_repo.repo_id}/scan?limit=0", timeout=TIMEOUT)
    assert bad.status_code == 400


def test_push_over_the_folder_limit_is_refused(limited: BastionServer, owner: tuple[str, str], git: Git,  # noqa: F811
                                               tmp_path: Path) -> None:
    repo = _repo(limited, owner)
    before = hf_api(limited, repo.token).model_info(repo.repo_id).sha
    _sha, push = _push_folder(git, repo, tmp_path, {"many": MAX_ENTRIES + 1})
    assert push.returncode != 0
    assert f"folder many/ would hold {MAX_ENTRIES + 1} entries; the limit is {MAX_ENTRIES}" in push.stderr
    assert "BASTION_MAX_TREE_ENTRIES" in push.stderr
    assert hf_api(limited, repo.token).model_info(repo.repo_id).sha == before


def test_push_over_the_total_limit_is_refused(limited: BastionServer, owner: tuple[str, str], git: Git,  # noqa: F811
                                              tmp_path: Path) -> None:
    repo = _repo(limited, owner)
    _sha, push = _push_folder(git, repo, tmp_path, {"a": 2000, "b": 2000})
    assert push.returncode == 0, push.stderr
    _sha, push = _push_folder(git, repo, tmp_path, {"c": 2500})  # a fresh clone: a, b and c
    assert push.returncode != 0
    assert f"the limit is {MAX_TOTAL} (BASTION_MAX_TOTAL_TREE_ENTRIES)" in push.stderr, push.stderr


def test_api_commit_over_the_folder_limit_is_refused(limited: BastionServer, owner: tuple[str, str]) -> None:
    repo = _repo(limited, owner)
    api = hf_api(limited, repo.token)
    before = api.model_info(repo.repo_id).sha
    lines = [{"key": "header", "value": {"summary": "many", "description": ""}}]
    lines += [{"key": "file", "value": {"path": f"many/f{i}.txt", "content": base64.b64encode(b"x").decode(),
                                        "encoding": "base64"}} for i in range(MAX_ENTRIES + 1)]
    resp = httpx.post(f"{limited.url}/api/models/{repo.repo_id}/commit/main", timeout=TIMEOUT,
                      content=b"\n".join(json.dumps(x).encode() for x in lines),
                      headers={"authorization": f"Bearer {repo.token}", "content-type": "application/x-ndjson"})
    assert resp.status_code == 400, resp.text
    assert f"would hold {MAX_ENTRIES + 1} entries; the limit is {MAX_ENTRIES}" in resp.headers["x-error-message"]
    assert api.model_info(repo.repo_id).sha == before
    # At the limit it is accepted.
    lines = lines[:1 + MAX_ENTRIES]
    resp = httpx.post(f"{limited.url}/api/models/{repo.repo_id}/commit/main", timeout=TIMEOUT,
                      content=b"\n".join(json.dumps(x).encode() for x in lines),
                      headers={"authorization": f"Bearer {repo.token}", "content-type": "application/x-ndjson"})
    assert resp.status_code == 200, resp.text
