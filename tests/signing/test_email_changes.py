"""Stored commit verdicts follow the owner's e-mail addresses: verifying an address turns a commit
that claimed it into verified, removing the address turns it back into unverified.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.accounts.fixtures import (  # noqa: F401
    MailSink,
    create_password_user,
    csrf_of,
    http_login,
    link_in,
    mail_sink,
    web_server,
)
from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle
from tests.signing.conftest import SshKey, Work, keys_api, signature_of


def test_verifying_and_removing_an_email_recomputes_verdicts(web_server: BastionServer,  # noqa: F811
                                                             mail_sink: MailSink, git: Git,  # noqa: F811
                                                             ssh_key: SshKey, tmp_path: Path) -> None:
    name, token = create_password_user(web_server)
    assert keys_api(web_server, token, "POST", "/api/settings/ssh-signing-keys",
               json={"key": ssh_key.public}).status_code == 201
    repo = RepoHandle(web_server, name, token, f"{name}/signed")
    hf_api(web_server, token).create_repo(repo.repo_id)
    git("clone", "-q", repo.url(), str(tmp_path / "w"))
    work = Work(git, repo, tmp_path / "w")
    alias = f"{name}.alias@example.org"
    work.identity(alias)
    work.use_ssh(ssh_key)
    sha = work.commit("a.txt")
    work.push()
    before = signature_of(web_server, repo, sha)
    assert before["status"] == "unverified", before
    assert before["reason"] == f"committer e-mail {alias} is not a verified e-mail of the key's owner"

    client = http_login(web_server, name)
    sent = mail_sink.count()
    added = client.post("/settings/emails", data={"csrf_token": csrf_of(client.get("/settings/emails").text),
                                                  "email": alias})
    assert added.status_code == 303, added.text[:500]
    # Added but not yet verified: the stored verdict stands.
    assert signature_of(web_server, repo, sha)["status"] == "unverified"
    link = link_in(mail_sink.wait_for(alias, "Verify your e-mail", after=sent))
    assert client.get(link.removeprefix(web_server.url)).status_code == 303
    assert signature_of(web_server, repo, sha) == {"status": "verified", "type": "ssh", "keyId": before["keyId"],
                                                   "signer": name, "reason": None}

    page = client.get("/settings/emails").text
    found = re.search(r'action="/settings/emails/(\d+)/delete"', page)
    assert found, page[:1000]
    removed = client.post(f"/settings/emails/{found.group(1)}/delete", data={"csrf_token": csrf_of(page)})
    assert removed.status_code == 303, removed.text[:500]
    after = signature_of(web_server, repo, sha)
    assert after["status"] == "unverified" and after["reason"] == before["reason"]
