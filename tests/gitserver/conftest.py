"""Fixtures for git end-to-end tests: the real `git` and `git-lfs` binaries, never prompting.

Each test gets its own HOME and global git config, so the machine's settings cannot leak in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BastionServer, hf_api


@dataclass
class Git:
    env: dict[str, str]

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True, timeout: float = 120,
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["git", *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def commit_all(self, cwd: Path, message: str) -> str:
        self("add", "-A", cwd=cwd)
        self("commit", "-q", "-m", message, cwd=cwd)
        return self("rev-parse", "HEAD", cwd=cwd).stdout.strip()


@pytest.fixture(scope="session")
def git_binaries() -> None:
    assert shutil.which("git"), "git is required (scripts/install installs it)"
    assert shutil.which("git-lfs"), "git-lfs is required: apt-get install -y git-lfs (scripts/install)"


@pytest.fixture
def git(tmp_path: Path, git_binaries: None) -> Git:
    home = tmp_path / "home"
    home.mkdir()
    config = home / ".gitconfig"
    config.write_text("[user]\n\tname = Git Tester\n\temail = tester@example.com\n"
                      "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_GLOBAL": str(config),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false",
           "SSH_ASKPASS": "/bin/false", "LANG": "C", "NO_PROXY": "*"}
    runner = Git(env)
    runner("lfs", "install", "--skip-repo")
    return runner


@dataclass
class RepoHandle:
    server: BastionServer
    owner: str
    token: str
    repo_id: str
    prefix: str = ""  # "", "datasets/" or "spaces/"

    def url(self, user: str | None = None, token: str | None = None, suffix: str = "") -> str:
        host = self.server.url.removeprefix("http://")
        creds = f"{user or self.owner}:{token if token is not None else self.token}@"
        if user == "" and token == "":
            creds = ""
        return f"http://{creds}{host}/{self.prefix}{self.repo_id}{suffix}"

    @property
    def anonymous_url(self) -> str:
        return self.url("", "")


def make_repo(server: BastionServer, private: bool = False, repo_type: str = "model") -> RepoHandle:
    owner, token = server.create_user()
    name = f"{owner}/r{os.urandom(3).hex()}"
    hf_api(server, token).create_repo(name, private=private, repo_type=repo_type,
                                      space_sdk="static" if repo_type == "space" else None)
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    return RepoHandle(server, owner, token, name, prefix)


@pytest.fixture
def repo(server: BastionServer) -> RepoHandle:
    return make_repo(server)


@pytest.fixture
def private_repo(server: BastionServer) -> RepoHandle:
    return make_repo(server, private=True)
