"""Secret scanning in the pipeline: auto-revocation of leaked Bastion tokens, push protection,
owner-only notices and the public revocation endpoint."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from tests.accounts.fixtures import MailSink, body
from tests.conftest import BastionServer, ClamdServer, hf_api, wait_for

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def github_token(seed: str) -> str:
    """A format-valid GitHub token (CRC32 checksum in base62): detected as checksum-verified."""
    rand = (seed * 30)[:30]
    n, check = zlib.crc32(rand.encode()), ""
    for _ in range(6):
        n, r = divmod(n, 62)
        check = ALPHABET[r] + check
    return f"ghp_{rand}{check}"


@pytest.fixture(scope="module")
def secret_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer,
                  mail_sink: MailSink) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("secrets"), env={
        "BASTION_CLAMD_ADDRESS": clamd.address, "BASTION_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}"}).start()
    yield server
    server.stop()


def _whoami(server: BastionServer, token: str) -> int:
    return httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}).status_code


def test_leaked_bastion_token_is_revoked_within_seconds(secret_server: BastionServer, mail_sink: MailSink) -> None:
    server = secret_server
    name, token = server.create_user()
    victim, victim_token = server.create_user()
    assert _whoami(server, victim_token) == 200
    api = hf_api(server, token)
    api.create_repo(f"{name}/notebook", private=True)  # private repos are scanned too
    api.upload_file(path_or_fileobj=f'import os\nHF_TOKEN = "{victim_token}"\n'.encode(), path_in_repo="train.py",
                    repo_id=f"{name}/notebook")
    wait_for(lambda: _whoami(server, victim_token) == 401, timeout=30)
    mail = mail_sink.wait_for(f"{victim}@example.com", "was revoked")
    assert victim_token not in body(mail) and "train.py" in body(mail)
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        reasons = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = 'token.revoke' "
                                       "AND namespace = :ns"), {"ns": victim}).scalars().all()
    engine.dispose()
    assert len(reasons) == 1 and "leaked" in str(reasons[0])
    assert _whoami(server, token) == 200  # the committer's own token was not in the file


def test_public_revocation_endpoint(secret_server: BastionServer, mail_sink: MailSink) -> None:
    server = secret_server
    name, token = server.create_user()
    for payload in ({"tokens": ["garbage", "bst_" + "x" * 36]}, {"token": 5}, "not json"):
        resp = httpx.post(f"{server.url}/api/credentials/revoke", **({"json": payload} if not isinstance(payload, str)
                                                                     else {"content": payload}))
        assert resp.status_code == 202
    assert _whoami(server, token) == 200
    resp = httpx.post(f"{server.url}/api/credentials/revoke", json={"tokens": [token]})
    assert resp.status_code == 202 and _whoami(server, token) == 401
    before = len(mail_sink.subjects_to(f"{name}@example.com"))
    assert httpx.post(f"{server.url}/api/credentials/revoke", json={"tokens": [token]}).status_code == 202
    mail_sink.wait_for(f"{name}@example.com", "was revoked")
    assert len(mail_sink.subjects_to(f"{name}@example.com")) == before  # told once, not per report


def test_push_protection_blocks_new_secrets_and_allows_an_audited_bypass(secret_server: BastionServer) -> None:
    server = secret_server
    name, token = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/protected"
    api.create_repo(repo_id)
    secret = github_token("q7Wd")
    api.upload_file(path_or_fileobj=f"# config\nTOKEN={secret}\n".encode(), path_in_repo="old.env", repo_id=repo_id)
    assert httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"secretPushProtection": True},
                     headers={"authorization": f"Bearer {token}"}).status_code == 200
    head = api.model_info(repo_id).sha
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=f"a = 1\nGITHUB = '{github_token('Zk3p')}'\n".encode(),
                        path_in_repo="cfg/new.py", repo_id=repo_id)
    message = exc.value.response.headers["x-error-message"]
    assert exc.value.response.status_code == 403 and "cfg/new.py:2" in message and "GitHub" in message
    assert github_token("Zk3p") not in exc.value.response.text
    assert api.model_info(repo_id).sha == head
    # Editing a file that already held a secret adds no new one: allowed.
    api.upload_file(path_or_fileobj=f"# config v2\nTOKEN={secret}\n".encode(), path_in_repo="old.env",
                    repo_id=repo_id)
    # The explicit bypass, with a reason, is accepted from the repo's manager and audited.
    lines = [{"key": "header", "value": {"summary": "test fixture", "secretsBypassReason": "this is a test credential"}},
             {"key": "file", "value": {"path": "fixtures/key.txt", "encoding": "utf-8",
                                       "content": f"{github_token('Zk3p')}\n"}}]
    import json

    resp = httpx.post(f"{server.url}/api/models/{repo_id}/commit/main",
                      content="\n".join(json.dumps(line) for line in lines),
                      headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"})
    assert resp.status_code == 200, resp.text
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        actions = conn.execute(sa.text("SELECT action FROM audit_events WHERE namespace = :ns AND action LIKE "
                                       "'repo.secret_push_%' ORDER BY id"), {"ns": name}).scalars().all()
    engine.dispose()
    assert actions == ["repo.secret_push_blocked", "repo.secret_push_bypass"]


def test_push_protection_reads_text_stored_with_lfs(secret_server: BastionServer) -> None:
    """A large text file goes through LFS (here: over the 10 MiB threshold); its secret is still caught."""
    server = secret_server
    name, token = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/big-notebook"
    api.create_repo(repo_id)
    assert httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"secretPushProtection": True},
                     headers={"authorization": f"Bearer {token}"}).status_code == 200
    filler = "".join(f'{{"step": {i}, "loss": {1 / (i + 1):.6f}}}\n' for i in range(400_000))
    assert len(filler) > 10 * 1024 * 1024
    lines = filler.count("\n")
    head = api.model_info(repo_id).sha
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=f"{filler}TOKEN = '{github_token('Lf5s')}'\n".encode(),
                        path_in_repo="logs/train.jsonl", repo_id=repo_id)
    message = exc.value.response.headers["x-error-message"]
    assert exc.value.response.status_code == 403 and f"logs/train.jsonl:{lines + 1}" in message
    assert api.model_info(repo_id).sha == head
    # Without the secret the same large file lands, through LFS.
    api.upload_file(path_or_fileobj=filler.encode(), path_in_repo="logs/train.jsonl", repo_id=repo_id)
    assert api.get_paths_info(repo_id, ["logs/train.jsonl"])[0].lfs is not None


def test_secret_notices_are_for_managers_only(secret_server: BastionServer, mail_sink: MailSink) -> None:
    server = secret_server
    name, token = server.create_user()
    _, reader_token = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/leaky"
    api.create_repo(repo_id)
    secret = github_token("mN8v")
    api.create_commit(repo_id, commit_message="oops", operations=[
        CommitOperationAdd("notebook.py", f"x = 1\n\nclient = Github('{secret}')\n".encode())])
    auth = {"authorization": f"Bearer {token}"}
    notices = wait_for(lambda: httpx.get(f"{server.url}/api/models/{repo_id}/secrets", headers=auth).json())
    assert [(n["file"], n["line"], n["provider"], n["state"]) for n in notices] == [("notebook.py", 3, "github", "open")]
    assert secret not in str(notices)
    mail = mail_sink.wait_for(f"{name}@example.com", f"Secrets found in {repo_id}")
    assert "notebook.py" in body(mail) and secret not in body(mail)
    # A reader of the public repo sees no trace of the finding.
    assert httpx.get(f"{server.url}/api/models/{repo_id}/secrets",
                     headers={"authorization": f"Bearer {reader_token}"}).status_code == 403
    reader_view = hf_api(server, reader_token).list_repo_tree(repo_id, expand=True)
    assert "secret" not in str([getattr(e, "security", None) for e in reader_view]).lower()
    reader_scan = httpx.get(f"{server.url}/api/models/{repo_id}/scan",
                            headers={"authorization": f"Bearer {reader_token}"}).json()
    assert "notebook.py" not in [f["path"] for f in reader_scan["filesWithIssues"]]
    assert "secretsScan" not in str(reader_scan)
    reader_tree = httpx.get(f"{server.url}/api/models/{repo_id}/tree/main", params={"expand": "true"},
                            headers={"authorization": f"Bearer {reader_token}"}).json()
    assert reader_tree and all("secretsScan" not in e.get("securityFileStatus", {}) for e in reader_tree)
    # The managers' security status includes the finding (the same status the Hub's fields carry).
    def manager_status() -> dict:  # type: ignore[type-arg]
        tree = httpx.get(f"{server.url}/api/models/{repo_id}/tree/main", params={"expand": "true"}, headers=auth)
        return next(e["securityFileStatus"] for e in tree.json() if e["path"] == "notebook.py")
    status = manager_status()
    assert status["secretsScan"]["status"] == "unsafe" and status["status"] == "unsafe"
    assert status["secretsScan"]["findings"][0]["line"] == 3 and secret not in str(status)
    issues = httpx.get(f"{server.url}/api/models/{repo_id}/scan", headers=auth).json()["filesWithIssues"]
    assert {"path": "notebook.py", "level": "unsafe"} in issues
    n = notices[0]
    resp = httpx.post(f"{server.url}/api/models/{repo_id}/secrets/state", headers=auth,
                      json={"fingerprint": n["fingerprint"], "state": "dismissed", "reason": "rotated already"})
    assert resp.status_code == 200
    assert httpx.get(f"{server.url}/api/models/{repo_id}/secrets", headers=auth).json()[0]["state"] == "dismissed"
    # Dismissed: it no longer counts against the file.
    assert manager_status()["secretsScan"]["status"] == "safe"

    # An edit elsewhere in the file, or the same secret copied to another file, is not a new secret:
    # the notice keeps its decision, follows the secret to its new line, and no new mail goes out.
    mails = len(mail_sink.subjects_to(f"{name}@example.com"))
    api.create_commit(repo_id, commit_message="more", operations=[
        CommitOperationAdd("notebook.py", f"import os\nx = 1\n\nclient = Github('{secret}')\n".encode()),
        CommitOperationAdd("copy.py", f"T = '{secret}'\n".encode())])
    moved = wait_for(lambda: [n for n in httpx.get(f"{server.url}/api/models/{repo_id}/secrets", headers=auth).json()
                              if {"file": "notebook.py", "line": 4} in n["locations"]
                              and {"file": "copy.py", "line": 1} in n["locations"]])
    assert len(httpx.get(f"{server.url}/api/models/{repo_id}/secrets", headers=auth).json()) == 1
    assert moved[0]["state"] == "dismissed"
    # A new secret is news again.
    api.upload_file(path_or_fileobj=f"K = '{github_token('n3wS')}'\n".encode(), path_in_repo="new.py",
                    repo_id=repo_id)
    mail_sink.wait_for(f"{name}@example.com", f"Secrets found in {repo_id}", after=0)
    wait_for(lambda: len(mail_sink.subjects_to(f"{name}@example.com")) == mails + 1)
    assert len(httpx.get(f"{server.url}/api/models/{repo_id}/secrets", headers=auth).json()) == 2


def test_third_party_verification_uses_the_configured_endpoint(tmp_path_factory: pytest.TempPathFactory,
                                                               mail_sink: MailSink) -> None:
    """A verifier asks the provider (here a local stand-in for GitHub's API) whether a token is live."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    live = github_token("L1ve")
    seen: list[str] = []

    class FakeGitHub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            ok = live in (self.headers.get("authorization") or "")
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"login": "someone"}' if ok else b"{}")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    import json

    server = BastionServer(tmp_path_factory.mktemp("verify"), env={
        "BASTION_SCANNERS": '["secrets"]', "BASTION_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}",
        "BASTION_SECRET_VERIFIERS": json.dumps({"github": f"http://127.0.0.1:{fake.server_port}"})}).start()
    try:
        name, token = server.create_user()
        api = hf_api(server, token)
        api.create_repo(f"{name}/v")
        api.upload_file(path_or_fileobj=f"a = '{live}'\nb = '{github_token('Dead')}'\n".encode(), path_in_repo="k.py",
                        repo_id=f"{name}/v")
        auth = {"authorization": f"Bearer {token}"}
        notices = wait_for(lambda: httpx.get(f"{server.url}/api/models/{name}/v/secrets", headers=auth).json())
        by_line = {n["line"]: n for n in notices}
        assert by_line[1]["verification"] == "api" and by_line[1]["verified"] is True
        assert by_line[2]["verification"] == "api" and by_line[2]["verified"] is False
        assert seen  # the configured endpoint was asked, nothing else
    finally:
        server.stop()
        fake.shutdown()
