"""Git accepts access tokens, never an account's password (as on the Hub)."""

from __future__ import annotations

from pathlib import Path

from tests.accounts.fixtures import PASSWORD, create_password_user, http_login
from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git


def test_git_refuses_an_account_password_and_accepts_a_token(server: BastionServer, git: Git,
                                                              tmp_path: Path) -> None:
    name, token = create_password_user(server)
    repo_id = f"{name}/private"
    hf_api(server, token).create_repo(repo_id, private=True)
    http_login(server, name, PASSWORD).close()  # the password is right: the web login takes it
    host = server.url.removeprefix("http://")

    for url in (f"http://{name}:{PASSWORD}@{host}/{repo_id}", f"http://{name}:{PASSWORD}@{host}/{repo_id}.git"):
        proc = git("clone", url, str(tmp_path / "with-password"), check=False)
        assert proc.returncode != 0
        assert "Authentication failed" in proc.stderr, proc.stderr
        assert not (tmp_path / "with-password").exists()
    # the password is refused for push discovery too
    proc = git("ls-remote", f"http://{name}:{PASSWORD}@{host}/{repo_id}", check=False)
    assert proc.returncode != 0 and "Authentication failed" in proc.stderr

    git("clone", f"http://{name}:{token}@{host}/{repo_id}", str(tmp_path / "with-token"))
    assert (tmp_path / "with-token" / ".gitattributes").exists()
