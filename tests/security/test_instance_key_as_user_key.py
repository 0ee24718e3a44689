"""Finding 8b (issue 15): any user could register the instance's public signing key as their own SSH key.

That made the key "theirs" in their profile, and adding (or removing) it deleted every stored verdict of
commits the instance key signed, in every repo. Now the instance key is refused with a 400, and adding a
user key leaves the verdicts of instance-signed commits as they were.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import make_repo
from tests.signing.conftest import SshKey, api, keys_api, signature_of, ssh_key  # noqa: F401


def _stored_verdicts(server: BastionServer, shas: list[str]) -> dict[str, tuple[str, str]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT commit_sha, status, verified_at FROM commit_signatures"))
            return {sha: (status, str(at)) for sha, status, at in rows if sha in shas}
    finally:
        engine.dispose()


def test_the_instance_key_cannot_be_added_to_a_user(server: BastionServer, tmp_path: Path) -> None:
    instance = api(server, "GET", "/api/signing-key", None).json()
    name, token = server.create_user()
    for text in (instance["publicKey"], instance["publicKey"] + " bastion-instance", instance["allowedSigners"]
                 .split(" ", 2)[2]):
        resp = keys_api(server, token, "POST", "/api/settings/ssh-signing-keys", json={"key": text, "title": "mine"})
        assert resp.status_code == 400, resp.text
        assert resp.headers["x-error-message"] == ("This is the instance's own signing key (it signs the commits "
                                                   "Bastion writes): it cannot be added to an account")
    assert api(server, "GET", "/api/settings/ssh-signing-keys", token).json() == []
    (tmp_path / "instance.pub").write_text(instance["publicKey"] + "\n")
    cli = server.cli("admin", "add-key", name, "--ssh", str(tmp_path / "instance.pub"), check=False)
    assert cli.returncode != 0 and "instance's own signing key" in cli.stderr


def test_adding_a_user_key_keeps_instance_verdicts(server: BastionServer, ssh_key: SshKey) -> None:  # noqa: F811
    repo = make_repo(server)
    info = hf_api(server, repo.token).upload_file(path_or_fileobj=b"hello\n", path_in_repo="hello.txt",
                                                  repo_id=repo.repo_id)
    assert signature_of(server, repo, info.oid)["signer"] == "Bastion (instance key)"
    before = _stored_verdicts(server, [info.oid])
    assert before[info.oid][0] == "verified"
    # The committer of that API commit adds a key and turns vigilant mode on: nothing the instance's
    # verdict depends on.
    resp = keys_api(server, repo.token, "POST", "/api/settings/ssh-signing-keys", json={"key": ssh_key.public})
    assert resp.status_code == 201, resp.text
    assert keys_api(server, repo.token, "PUT", "/api/settings/signing", json={"vigilantMode": True}).status_code == 200
    assert _stored_verdicts(server, [info.oid]) == before
    assert signature_of(server, repo, info.oid)["status"] == "verified"
