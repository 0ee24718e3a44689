"""Finding 12 (gated part): `gated` was stored and echoed, but anyone, anonymous included, downloaded a
gated repo. Now a gated repo's metadata stays visible while its files need an accepted access request
on every read path (resolve, git, LFS, Xet, the web file view), with the Hub's access-request API,
GatedRepoError in the client, the token flag canReadGatedRepos and the org bypass rules.

Driven from outside: the real huggingface_hub client, git, git-lfs's batch API over HTTP, a browser's
form posts; audit events and mail as a server's operator sees them.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

from bastion.audit.models import AuditEvent
from tests.accounts.fixtures import (  # noqa: F401
    MailSink,
    create_password_user,
    csrf_of,
    http_login,
    mail_sink,
    session_db,
    web_server,
)
from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, git, git_binaries  # noqa: F401

CARD = b"---\nlicense: mit\nextra_gated_prompt: Use it kindly.\nextra_gated_fields:\n  Company: text\n" \
       b"  I agree to the terms: checkbox\n---\n# Behind the gate\nThe card's words-7f3a are file contents.\n"
WEIGHTS = random.Random(12).randbytes(40_000)  # *.bin: stored in LFS by the default .gitattributes
CONFIG = b'{"hidden": "config-5c1e"}\n'


def _api(server: BastionServer, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30, follow_redirects=False)


def _gated_repo(server: BastionServer, token: str, repo_id: str, mode: str = "manual", create: bool = True) -> None:
    api = hf_api(server, token)
    if create:
        api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=CARD, path_in_repo="README.md", repo_id=repo_id)
    api.upload_file(path_or_fileobj=CONFIG, path_in_repo="config.json", repo_id=repo_id)
    api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="model.bin", repo_id=repo_id)
    api.update_repo_settings(repo_id, gated=mode)  # type: ignore[arg-type]


def _download(server: BastionServer, token: str | None, repo_id: str, tmp: Path, name: str = "config.json") -> bytes:
    path = hf_hub_download(repo_id, name, endpoint=server.url, token=token if token else False,
                           cache_dir=tmp / secrets.token_hex(4))
    return Path(path).read_bytes()


def _gated(server: BastionServer, token: str | None, repo_id: str, tmp: Path, name: str = "config.json",
           ) -> GatedRepoError:
    with pytest.raises(GatedRepoError) as info:
        _download(server, token, repo_id, tmp, name)
    return info.value


def _ask(server: BastionServer, token: str, repo_id: str, fields: dict[str, str] | None = None) -> httpx.Response:
    with _api(server, token) as c:
        return c.post(f"/{repo_id}/ask-access", json=fields or {})


def _lfs_batch(server: BastionServer, token: str | None, repo_id: str) -> httpx.Response:
    with _api(server, token) as c:
        return c.post(f"/{repo_id}.git/info/lfs/objects/batch", headers={"content-type": "application/vnd.git-lfs+json"},
                      json={"operation": "download", "transfers": ["basic"],
                            "objects": [{"oid": hashlib.sha256(WEIGHTS).hexdigest(), "size": len(WEIGHTS)}]})


def _clone(git: Git, server: BastionServer, token: str | None, repo_id: str, dest: Path,  # noqa: F811
           ) -> tuple[int, str]:
    host = server.url.removeprefix("http://")
    url = f"http://u:{token}@{host}/{repo_id}" if token else f"http://{host}/{repo_id}"
    proc = git("clone", "-q", url, str(dest), check=False)
    return proc.returncode, proc.stderr


def _audit(server: BastionServer, repo_id: str) -> list[tuple[str, dict[str, object]]]:
    engine = session_db(server)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(AuditEvent.action, AuditEvent.details).where(
                AuditEvent.target_id == f"model/{repo_id}").order_by(AuditEvent.id)).all()
    finally:
        engine.dispose()
    return [(a, d or {}) for a, d in rows]


def test_a_manual_gate_holds_on_every_read_path(web_server: BastionServer, mail_sink: MailSink,  # noqa: F811
                                                git: Git, tmp_path: Path) -> None:  # noqa: F811
    owner, owner_token = create_password_user(web_server)
    reader, reader_token = create_password_user(web_server)
    third, third_token = create_password_user(web_server)
    repo_id = f"{owner}/gated-{secrets.token_hex(3)}"
    _gated_repo(web_server, owner_token, repo_id)

    # Metadata stays visible to whoever can read the repo, anonymous included; the repo is listed.
    anon = hf_api(web_server, None)
    assert anon.model_info(repo_id).gated == "manual"
    assert set(anon.list_repo_files(repo_id)) >= {"README.md", "config.json", "model.bin"}

    # Files: anonymous gets the Hub's 401, a signed-in user without a request its 403, on every path.
    err = _gated(web_server, None, repo_id, tmp_path)
    assert err.response.status_code == 401 and "Please log in" in str(err)
    # the listing filter the client sends (gated=true|false) is applied, not ignored
    assert [m.id for m in anon.list_models(author=owner, gated=True)] == [repo_id]
    assert [m.id for m in anon.list_models(author=owner, gated=False)] == []
    for name in ("config.json", "model.bin", "README.md"):
        err = _gated(web_server, reader_token, repo_id, tmp_path, name)
        assert err.response.status_code == 403
        assert f"Visit {web_server.url}/{repo_id} to ask for access" in str(err)
    with _api(web_server, reader_token) as c:
        head = c.head(f"/{repo_id}/resolve/main/config.json")
        assert head.status_code == 403 and head.headers["x-error-code"] == "GatedRepo"
        assert c.get(f"/api/models/{repo_id}/xet-read-token/main").headers.get("x-error-code") == "GatedRepo"
        oid = hashlib.sha256(WEIGHTS).hexdigest()
        assert c.get(f"/{repo_id}.git/info/lfs/objects/{oid}").status_code == 403
    batch = _lfs_batch(web_server, reader_token, repo_id)
    assert batch.status_code == 403 and batch.headers["x-error-code"] == "GatedRepo"
    assert _lfs_batch(web_server, None, repo_id).status_code == 401
    code, stderr = _clone(git, web_server, reader_token, repo_id, tmp_path / "refused")
    assert code != 0 and "not in the authorized list" in stderr
    code, _ = _clone(git, web_server, None, repo_id, tmp_path / "anon")
    assert code != 0 and not (tmp_path / "anon" / "config.json").exists()

    # Ask for access (the gate form's fields travel as JSON): pending, the owner is e-mailed.
    mark = mail_sink.count()
    asked = _ask(web_server, reader_token, repo_id, {"Company": "Acme", "I agree to the terms": "true"})
    assert asked.status_code == 303 and asked.headers["location"] == f"{web_server.url}/{repo_id}"
    assert "awaiting a review" in str(_gated(web_server, reader_token, repo_id, tmp_path))
    mail = mail_sink.wait_for(f"{owner}@example.com", "asks for access", after=mark)
    assert reader in str(mail["Subject"]) and f"{web_server.url}/{repo_id}/access-requests" in mail.get_content()
    owner_api = hf_api(web_server, owner_token)
    (pending,) = owner_api.list_pending_access_requests(repo_id)
    assert (pending.username, pending.email, pending.status, pending.fields) == (
        reader, f"{reader}@example.com", "pending", {"Company": "Acme", "I agree to the terms": "true"})
    assert len(pending.request_id) == 24
    with pytest.raises(HfHubHTTPError) as denied:  # requesters do not review requests
        list(hf_api(web_server, reader_token).list_pending_access_requests(repo_id))
    assert denied.value.response.status_code == 403

    # Accepted: every read path opens, and the requester is told.
    mark = mail_sink.count()
    owner_api.accept_access_request(repo_id, reader)
    assert mail_sink.wait_for(f"{reader}@example.com", "access request", after=mark)
    assert _download(web_server, reader_token, repo_id, tmp_path) == CONFIG
    assert _download(web_server, reader_token, repo_id, tmp_path, "model.bin") == WEIGHTS
    batch = _lfs_batch(web_server, reader_token, repo_id)
    assert batch.status_code == 200 and "download" in batch.json()["objects"][0]["actions"]
    with _api(web_server, reader_token) as c:
        assert c.get(f"/api/models/{repo_id}/xet-read-token/main").status_code == 200
    code, stderr = _clone(git, web_server, reader_token, repo_id, tmp_path / "clone")
    assert code == 0, stderr
    assert (tmp_path / "clone" / "model.bin").read_bytes() == WEIGHTS
    assert [r.username for r in owner_api.list_accepted_access_requests(repo_id)] == [reader]

    # Rejected (with a reason): closed again; a rejected user cannot ask again. Then back to pending.
    owner_api.reject_access_request(repo_id, reader, rejection_reason="Not for this use")
    assert "has been rejected" in str(_gated(web_server, reader_token, repo_id, tmp_path))
    assert _ask(web_server, reader_token, repo_id).status_code == 403
    owner_api.cancel_access_request(repo_id, reader)
    assert [r.username for r in owner_api.list_pending_access_requests(repo_id)] == [reader]
    assert "awaiting a review" in str(_gated(web_server, reader_token, repo_id, tmp_path))
    with pytest.raises(HfHubHTTPError):  # already pending
        owner_api.cancel_access_request(repo_id, reader)

    # The requester withdraws; a manager grants access to someone who never asked.
    with _api(web_server, reader_token) as c:
        assert c.post(f"/api/models/{repo_id}/user-access-request/cancel").status_code == 200
    assert list(owner_api.list_pending_access_requests(repo_id)) == []
    _gated(web_server, third_token, repo_id, tmp_path)
    owner_api.grant_access(repo_id, third)
    assert _download(web_server, third_token, repo_id, tmp_path) == CONFIG
    (granted,) = owner_api.list_accepted_access_requests(repo_id)
    assert (granted.username, granted.email) == (third, None)
    with pytest.raises(HfHubHTTPError) as again:
        owner_api.grant_access(repo_id, third)
    assert again.value.response.status_code == 400

    # Gating off: everyone reads; on again: the accepted user still does, the others do not.
    owner_api.update_repo_settings(repo_id, gated=False)
    assert _download(web_server, None, repo_id, tmp_path) == CONFIG
    owner_api.update_repo_settings(repo_id, gated="auto")
    assert _download(web_server, third_token, repo_id, tmp_path) == CONFIG
    _gated(web_server, reader_token, repo_id, tmp_path)

    actions = [a for a, _ in _audit(web_server, repo_id)]
    for expected in ("repo.update_gated", "repo.access_request.create", "repo.access_request.accept",
                     "repo.access_request.reject", "repo.access_request.reset", "repo.access_request.withdraw",
                     "repo.access_request.grant"):
        assert expected in actions, (expected, actions)
    gating = [d for a, d in _audit(web_server, repo_id) if a == "repo.update_gated"]
    assert [d["gated"] for d in gating] == ["manual", False, "auto"]


def test_auto_gate_and_the_token_flag(web_server: BastionServer, tmp_path: Path) -> None:  # noqa: F811
    owner, owner_token = create_password_user(web_server)
    reader, reader_token = create_password_user(web_server)
    stranger, _ = create_password_user(web_server)
    repo_id = f"{owner}/auto-{secrets.token_hex(3)}"
    _gated_repo(web_server, owner_token, repo_id, mode="auto")
    _gated(web_server, reader_token, repo_id, tmp_path)
    assert _ask(web_server, reader_token, repo_id).status_code == 303
    assert _download(web_server, reader_token, repo_id, tmp_path) == CONFIG  # auto: accepted at once
    (accepted,) = hf_api(web_server, owner_token).list_accepted_access_requests(repo_id)
    assert accepted.username == reader

    def token(user: str, *args: str) -> str:
        return web_server.admin("create-token", user, "--name", secrets.token_hex(3), *args).stdout.strip()

    # read and write tokens read what their owner may read
    assert _download(web_server, token(reader, "--role", "read"), repo_id, tmp_path) == CONFIG
    # a fine-grained token reads public repos, but a gated one's files only with canReadGatedRepos
    plain = token(reader, "--role", "fineGrained", "--scope", f"user:{reader}=repo.write")
    assert hf_api(web_server, plain).model_info(repo_id).gated == "auto"
    err = _gated(web_server, plain, repo_id, tmp_path)
    assert err.response.status_code == 403 and "canReadGatedRepos" in str(err)
    flagged = token(reader, "--role", "fineGrained", "--scope", f"user:{reader}=repo.content.read",
                    "--can-read-gated-repos")
    assert _download(web_server, flagged, repo_id, tmp_path) == CONFIG
    who = hf_api(web_server, flagged).whoami()
    assert who["auth"]["accessToken"]["fineGrained"]["canReadGatedRepos"] is True
    # the flag widens nothing beyond the user's own access
    err = _gated(web_server, token(stranger, "--role", "fineGrained", "--can-read-gated-repos"), repo_id, tmp_path)
    assert "not in the authorized list" in str(err)
    refused = web_server.admin("create-token", reader, "--name", "x", "--role", "write",
                             "--can-read-gated-repos", check=False)
    assert refused.returncode != 0 and "fine-grained" in refused.stderr
    # gating controls that are not built are refused, not stored and ignored
    bad = _settings(web_server, owner_token, repo_id, gatedNotificationsMode="bulk")
    assert bad.status_code == 400 and "gatedNotificationsMode" in bad.text


def _org_setup(server: BastionServer) -> dict[str, tuple[str, str]]:
    people = {role: create_password_user(server) for role in ("admin", "read", "write", "contributor",
                                                                 "group_admin", "group_reader", "outsider")}
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", people["admin"][0])
    for role in ("read", "write"):
        server.admin("add-member", org, people[role][0], "--role", role)
    for who in ("contributor", "group_admin", "group_reader"):  # at the root they only read; the group says more
        server.admin("add-member", org, people[who][0], "--role", "read")
    with _api(server, people["admin"][1]) as c:
        group = c.post(f"/api/organizations/{org}/resource-groups", json={"name": "team", "users": [
            {"user": people["contributor"][0], "role": "contributor"},
            {"user": people["group_admin"][0], "role": "admin"},
            {"user": people["group_reader"][0], "role": "read"}]})
        assert group.status_code == 201, group.text
    people["org"] = (org, group.json()["id"])
    return people


def _settings(server: BastionServer, token: str, repo_id: str, **body: object) -> httpx.Response:
    with _api(server, token) as c:
        return c.put(f"/api/models/{repo_id}/settings", json=body)


def test_org_bypass_rules(web_server: BastionServer, tmp_path: Path) -> None:  # noqa: F811
    p = _org_setup(web_server)
    org, group_id = p["org"]
    token = {who: tok for who, (_name, tok) in p.items() if who != "org"}
    root_root = web_server.create_user(admin=True)[1]  # an instance administrator, in no org

    root = f"{org}/root-gated"
    _gated_repo(web_server, token["admin"], root)
    grouped = f"{org}/group-gated"
    with _api(web_server, token["contributor"]) as c:  # the contributor creates it, in the group
        made = c.post("/api/repos/create", json={"name": "group-gated", "organization": org,
                                                 "resourceGroupId": group_id, "private": False})
        assert made.status_code == 200, made.text
    _gated_repo(web_server, token["contributor"], grouped, create=False)

    def can(who: str, repo_id: str) -> bool:
        try:
            return _download(web_server, token.get(who, root_root if who == "instance" else ""), repo_id,
                             tmp_path) == CONFIG
        except GatedRepoError:
            return False

    # Members gated only when the repo says so: by default each member whose role reads the repo passes.
    expect_default = {"admin": True, "read": True, "write": True, "outsider": False, "instance": True}
    assert {w: can(w, root) for w in expect_default} == expect_default
    expect_default = {"contributor": True, "group_admin": True, "group_reader": True, "read": False, "outsider": False}
    assert {w: can(w, grouped) for w in expect_default} == expect_default

    # "Also gate access for members": only org admins, the creator and the group's admins pass.
    for repo_id, manager in ((root, "admin"), (grouped, "contributor")):
        assert _settings(web_server, token[manager], repo_id, orgMembersGated=True).status_code == 200
    with _api(web_server, token["admin"]) as c:
        assert c.get(f"/api/models/{root}/settings").json()["orgMembersGated"] is True
    expect = {"admin": True, "read": False, "write": False, "outsider": False, "instance": True}
    assert {w: can(w, root) for w in expect} == expect
    expect = {"admin": True, "contributor": True, "group_admin": True, "group_reader": False, "read": False}
    assert {w: can(w, grouped) for w in expect} == expect
    err = _gated(web_server, token["write"], root, tmp_path)
    assert err.response.status_code == 403 and "not in the authorized list" in str(err)

    # A gated member asks like anyone; a write member (who manages the repo) may review requests.
    assert _ask(web_server, token["read"], root).status_code == 303
    assert [r.username for r in hf_api(web_server, token["write"]).list_pending_access_requests(root)] == [
        p["read"][0]]
    hf_api(web_server, token["admin"]).accept_access_request(root, p["read"][0])
    assert can("read", root)

    # A write member may upload, but a Xet write token does not reconstruct files they cannot read.
    with _api(web_server, token["write"]) as c:
        cas = c.get(f"/api/models/{root}/xet-write-token/main").json()
    with httpx.Client(timeout=30) as c:
        plan = c.get(f"{cas['casUrl']}/v1/reconstructions/{'ab' * 32}",
                     headers={"authorization": f"Bearer {cas['accessToken']}"})
    assert plan.status_code == 403 and "file contents" in plan.headers["x-error-message"]
    with _api(web_server, token["admin"]) as c:  # the admin's write token is not refused (unknown file: 404)
        cas = c.get(f"/api/models/{root}/xet-write-token/main").json()
    with httpx.Client(timeout=30) as c:
        plan = c.get(f"{cas['casUrl']}/v1/reconstructions/{'ab' * 32}",
                     headers={"authorization": f"Bearer {cas['accessToken']}"})
    assert plan.status_code == 404

    # The setting is an organization's: a user repo refuses it (accepted means enforced).
    mine = f"{p['outsider'][0]}/mine"
    hf_api(web_server, token["outsider"]).create_repo(mine)
    bad = _settings(web_server, token["outsider"], mine, orgMembersGated=True)
    assert bad.status_code == 400 and "organization" in bad.text


def test_the_web_gate_form_and_review_page(web_server: BastionServer, mail_sink: MailSink,  # noqa: F811
                                           tmp_path: Path) -> None:
    owner, owner_token = create_password_user(web_server)
    reader, _reader_token = create_password_user(web_server)
    repo_id = f"{owner}/web-{secrets.token_hex(3)}"
    _gated_repo(web_server, owner_token, repo_id)

    with httpx.Client(base_url=web_server.url, headers={"accept": "text/html"}, timeout=30) as anon:
        page = anon.get(f"/{repo_id}")
        assert page.status_code == 200 and "model.bin" in page.text and "words-7f3a" not in page.text
        assert "Sign in</a> to review the conditions" in page.text
        blob = anon.get(f"/{repo_id}/blob/main/config.json")
        assert blob.status_code == 303 and blob.headers["location"].startswith("/login")

    browser = http_login(web_server, reader)
    try:
        page = browser.get(f"/{repo_id}")
        assert 'id="ask-access"' in page.text and "Use it kindly." in page.text and 'name="Company"' in page.text
        assert "words-7f3a" not in page.text  # the README is file contents
        blob = browser.get(f"/{repo_id}/blob/main/config.json")
        assert blob.status_code == 403 and "config-5c1e" not in blob.text
        # without the page's CSRF token the form is refused
        forged = browser.post(f"/{repo_id}/ask-access", data={"Company": "Evil"})
        assert forged.status_code == 403
        sent = browser.post(f"/{repo_id}/ask-access", data={"csrf_token": csrf_of(page.text), "Company": "Acme",
                                                            "I agree to the terms": "true"})
        assert sent.status_code == 303
        assert "awaiting a review" in browser.get(f"/{repo_id}").text

        manager = http_login(web_server, owner)
        try:
            page = manager.get(f"/{repo_id}")
            assert 'id="review-requests"' in page.text and "words-7f3a" in page.text
            review = manager.get(f"/{repo_id}/access-requests")
            assert review.status_code == 200 and f'data-user="{reader}"' in review.text and "Acme" in review.text
            assert browser.get(f"/{repo_id}/access-requests").status_code == 403  # requesters do not review
            mark = mail_sink.count()
            done = manager.post(f"/{repo_id}/access-requests", data={"csrf_token": csrf_of(review.text),
                                                                     "user": reader, "action": "accepted"})
            assert done.status_code == 303
            mail_sink.wait_for(f"{reader}@example.com", "access request", after=mark)
        finally:
            manager.close()

        page = browser.get(f"/{repo_id}")
        assert "words-7f3a" in page.text and "you have been granted access" in page.text
        blob = browser.get(f"/{repo_id}/blob/main/config.json")
        assert blob.status_code == 200 and "config-5c1e" in blob.text
    finally:
        browser.close()
    created = [d for a, d in _audit(web_server, repo_id) if a == "repo.access_request.create"]
    assert created == [{"user": reader, "status": "pending", "mode": "manual",
                        "fields": ["Company", "I agree to the terms"]}]
    assert re.search(r"repo\.access_request\.accept", str(_audit(web_server, repo_id)))
