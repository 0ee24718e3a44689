"""History scan: a repository that entered without secret scanning (an import) is scanned in full on demand."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import BastionServer, wait_for
from tests.gitserver.conftest import Git, make_repo
from tests.scanning.test_secret_pipeline import github_token


def test_history_scan_finds_a_secret_only_in_an_intermediate_commit(git: Git, tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = BastionServer(data, env={"BASTION_SCANNERS": "[]"}).start()  # an instance that did not scan
    try:
        handle = make_repo(before)
        work = tmp_path / "w"
        git("clone", "-q", handle.url(), str(work))
        secret = github_token("hI5t")
        (work / "cfg.py").write_text(f"token = '{secret}'\n")
        git.commit_all(work, "add config")
        (work / "cfg.py").write_text("import os\ntoken = os.environ['GH']\n")
        git.commit_all(work, "read the token from the environment")
        git("push", "-q", "origin", "main", cwd=work)
    finally:
        before.stop()
    server = BastionServer(data).start()  # secret scanning on from here
    try:
        auth = {"authorization": f"Bearer {handle.token}"}
        url = f"{server.url}/api/models/{handle.repo_id}"
        assert httpx.get(f"{url}/secrets?history=true", headers=auth).json() == []
        queued = httpx.post(f"{url}/scan?history=true", headers=auth).json()["queued"]
        assert queued == 3  # .gitattributes and both versions of cfg.py
        found = wait_for(lambda: httpx.get(f"{url}/secrets?history=true", headers=auth).json())
        assert [(n["file"], n["line"], n["provider"]) for n in found] == [("cfg.py", 1, "github")]
        assert secret not in str(found)
        assert httpx.get(f"{url}/secrets", headers=auth).json() == []  # not at the tip
    finally:
        server.stop()
