"""Secret push protection modes (issue 22): `verified-only | high-confidence | all`, repo and org setting.

An AWS key id with its secret key is never "verified" offline (no checksum) and live verification is off by
default, so before the modes a repo with push protection on accepted one. In the default mode
(`high-confidence`) a git push or a huggingface_hub commit adding such a pair is refused; `verified-only`
accepts it; `all` refuses even a generic password. Every key here is generated from a fixed seed.
"""

from __future__ import annotations

import json
import random
import secrets
import string
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from bastion.repos.service import secret_push_protection_mode
from bastion.scanning.protection import refuses
from bastion.scanning.scanners.secrets import SecretScanner
from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, git, git_binaries  # noqa: F401 - fixtures

_R = random.Random(2201)
_B32 = string.ascii_uppercase + "234567"
_B64 = string.ascii_letters + string.digits + "+/"


def _aws_pair() -> tuple[str, str]:
    key_id = "AKIA" + "".join(_R.choice(_B32) for _ in range(16))
    while True:
        secret = "".join(_R.choice(_B64) for _ in range(40))
        if any(c.isupper() for c in secret) and any(c.islower() for c in secret):
            return key_id, secret


def _password() -> str:
    return "".join(_R.choice(string.ascii_letters + string.digits) for _ in range(16)) + "!7"


def _client(server: BastionServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60)


def _audit(server: BastionServer, action: str, target: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = :a AND target_id = :t "
                                        "ORDER BY id"), {"a": action, "t": target}).scalars().all()
    finally:
        engine.dispose()
    return [json.loads(d) if isinstance(d, str) else d for d in rows]


def _protected_repo(server: BastionServer, **settings: Any) -> tuple[str, str]:
    owner, token = server.create_user()
    repo_id = f"{owner}/r{secrets.token_hex(3)}"
    hf_api(server, token).create_repo(repo_id)
    with _client(server, token) as c:
        resp = c.put(f"/api/models/{repo_id}/settings", json={"secretPushProtection": True, **settings})
        assert resp.status_code == 200, resp.text
    return repo_id, token


def _refused(exc: pytest.ExceptionInfo[HfHubHTTPError], *needles: str) -> str:
    message = exc.value.response.headers["x-error-message"]
    assert exc.value.response.status_code == 403 and "Push protection" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_default_mode_refuses_an_unverified_aws_pair_and_verified_only_accepts_it(
        server: BastionServer, git: Git, tmp_path: Path) -> None:  # noqa: F811
    repo_id, token = _protected_repo(server)
    api = hf_api(server, token)
    with _client(server, token) as c:
        assert c.get(f"/api/models/{repo_id}/settings").json()["secretPushProtectionMode"] == "high-confidence"
    key_id, secret = _aws_pair()
    env = f"# staging\nAWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n"
    head = api.model_info(repo_id).sha

    host = server.url.removeprefix("http://")
    work = tmp_path / "w"
    git("clone", f"http://user:{token}@{host}/{repo_id}", str(work))
    (work / "deploy").mkdir()
    (work / "deploy" / ".env").write_text(env)
    pushed = git.commit_all(work, "deploy settings")
    proc = git("push", "origin", "main", cwd=work, check=False)
    assert proc.returncode != 0 and "Push protection" in proc.stderr, proc.stderr
    assert "deploy/.env:2" in proc.stderr and "AWS access key" in proc.stderr, proc.stderr
    assert secret not in proc.stderr and key_id not in proc.stderr

    with pytest.raises(HfHubHTTPError) as exc:  # the same pair through huggingface_hub, in a notebook
        notebook = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 1,
                               "source": f"import boto3\nkey = '{key_id}'\nsecret = '{secret}'\n"}],
                    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        api.create_commit(repo_id, commit_message="explore", operations=[
            CommitOperationAdd("explore.ipynb", json.dumps(notebook, indent=1).encode())])
    assert secret not in _refused(exc, "explore.ipynb:", "AWS access key")
    assert api.model_info(repo_id).sha == head
    assert len(_audit(server, "repo.secret_push_blocked", f"model/{repo_id}")) == 2

    # verified-only: what push protection refused before this issue -- the pair lands.
    with _client(server, token) as c:
        assert c.put(f"/api/models/{repo_id}/settings",
                     json={"secretPushProtectionMode": "verified-only"}).status_code == 200
        assert c.get(f"/api/models/{repo_id}/settings").json()["secretPushProtectionMode"] == "verified-only"
    assert _audit(server, "repo.update_settings", f"model/{repo_id}")[-1] == {
        "secretPushProtectionMode": "verified-only", "from": "high-confidence"}
    assert _audit(server, "repo.protection.lower", f"model/{repo_id}") == [
        {"secretPushProtectionMode": {"from": "high-confidence", "to": "verified-only"}}]
    git("push", "origin", "main", cwd=work)
    assert api.model_info(repo_id).sha == pushed
    api.upload_file(path_or_fileobj=env.encode(), path_in_repo="other/.env", repo_id=repo_id)
    assert "other/.env" in api.list_repo_files(repo_id)


def test_all_refuses_a_generic_password_that_high_confidence_accepts(server: BastionServer) -> None:
    repo_id, token = _protected_repo(server)
    api = hf_api(server, token)
    api.upload_file(path_or_fileobj=f"DB_HOST=db\nDB_PASSWORD={_password()}\n".encode(), path_in_repo="a.env",
                    repo_id=repo_id)  # high-confidence: a generic password is no distinctive format
    with _client(server, token) as c:
        assert c.put(f"/api/models/{repo_id}/settings", json={"secretPushProtectionMode": "all"}).status_code == 200
    assert _audit(server, "repo.protection.lower", f"model/{repo_id}") == []  # raising is no lowering
    head = api.model_info(repo_id).sha
    for path, content in (("b.env", f"DB_HOST=db\nDB_PASSWORD={_password()}\n"),
                          ("c.py", f'DSN = "postgres://app:{_password()}@db.internal:5432/app"\n')):
        with pytest.raises(HfHubHTTPError) as exc:
            api.upload_file(path_or_fileobj=content.encode(), path_in_repo=path, repo_id=repo_id)
        _refused(exc, f"{path}:")
    assert api.model_info(repo_id).sha == head


@pytest.mark.parametrize("bad", ["strict", "", "HIGH-CONFIDENCE", 5, True, ["all"]])
def test_an_invalid_mode_is_a_400_naming_the_valid_ones(server: BastionServer, bad: object) -> None:
    owner, token = server.create_user()
    repo_id = f"{owner}/r{secrets.token_hex(3)}"
    hf_api(server, token).create_repo(repo_id)
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", owner)
    with _client(server, token) as c:
        for url in (f"/api/models/{repo_id}/settings", f"/api/organizations/{org}/settings"):
            before = c.get(url).json()
            resp = c.put(url, json={"secretPushProtection": True, "secretPushProtectionMode": bad})
            assert resp.status_code == 400, (url, resp.text)
            message = resp.headers["x-error-message"]
            assert "secretPushProtectionMode" in message and "verified-only, high-confidence, all" in message
            assert resp.json()["error"] == message  # the Hub's error format
            assert c.get(url).json() == before  # nothing of the request was applied


def test_the_org_mode_applies_to_its_new_repos_and_is_their_floor_while_the_org_enforces(
        server: BastionServer) -> None:
    owner, token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", owner)
    api = hf_api(server, token)
    with _client(server, token) as c:
        assert c.get(f"/api/organizations/{org}/settings").json()["secretPushProtectionMode"] == "high-confidence"
        assert c.put(f"/api/organizations/{org}/settings", json={"secretPushProtectionMode": "all"}).status_code == 200
        assert c.get(f"/api/organizations/{org}/settings").json()["secretPushProtectionMode"] == "all"
        assert _audit(server, "org.settings.security.secret_push_protection", org) == [
            {"secretPushProtectionMode": "all", "from": "high-confidence"}]
        # A repo created afterwards takes the org's mode.
        repo_id = f"{org}/fresh-model"
        api.create_repo(repo_id)
        assert c.get(f"/api/models/{repo_id}/settings").json()["secretPushProtectionMode"] == "all"
        assert c.put(f"/api/models/{repo_id}/settings", json={"secretPushProtection": True}).status_code == 200
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=f"password: {_password()}\n".encode(), path_in_repo="db.yml",
                        repo_id=repo_id)
    _refused(exc, "db.yml:1")

    # The org enforces protection in high-confidence mode: a repo set to verified-only still refuses a pair.
    key_id, secret = _aws_pair()
    with _client(server, token) as c:
        assert c.put(f"/api/organizations/{org}/settings", json={
            "secretPushProtection": True, "secretPushProtectionMode": "high-confidence"}).status_code == 200
        assert c.put(f"/api/models/{repo_id}/settings",
                     json={"secretPushProtection": False, "secretPushProtectionMode": "verified-only"}).status_code == 200
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=f"aws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n".encode(),
                        path_in_repo="credentials", repo_id=repo_id)
    _refused(exc, "credentials:1", "AWS access key")
    # Once the org stops enforcing, the repo's own choice (off) holds.
    with _client(server, token) as c:
        assert c.put(f"/api/organizations/{org}/settings", json={"secretPushProtection": False}).status_code == 200
    api.upload_file(path_or_fileobj=f"aws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n".encode(),
                    path_in_repo="credentials", repo_id=repo_id)


def _repo(settings: dict[str, Any], org: Any = None) -> Any:
    return SimpleNamespace(settings=settings, owner_org_id=None if org is None else 1)


def _org(on: bool, mode: str) -> Any:
    return SimpleNamespace(secret_push_protection=on, secret_push_protection_mode=mode)


def test_which_mode_is_in_force() -> None:
    on = {"secret_push_protection": True}
    assert secret_push_protection_mode(_repo({}), None) is None
    assert secret_push_protection_mode(_repo(on), None) == "high-confidence"
    assert secret_push_protection_mode(_repo({**on, "secret_push_protection_mode": "all"}), None) == "all"
    # An org repo without a mode of its own takes the org's; the org's protection off: the repo's choice holds.
    assert secret_push_protection_mode(_repo(on, True), _org(False, "verified-only")) == "verified-only"
    assert secret_push_protection_mode(_repo({**on, "secret_push_protection_mode": "verified-only"}, True),
                                       _org(False, "all")) == "verified-only"
    # The org's protection on: on for every repo, and the org's mode is the floor.
    assert secret_push_protection_mode(_repo({}, True), _org(True, "all")) == "all"
    assert secret_push_protection_mode(_repo({"secret_push_protection_mode": "verified-only"}, True),
                                       _org(True, "high-confidence")) == "high-confidence"
    assert secret_push_protection_mode(_repo({"secret_push_protection_mode": "all"}, True),
                                       _org(True, "verified-only")) == "all"


def test_what_each_mode_refuses() -> None:
    from tests.scanning.test_secret_pipeline import github_token

    scanner = SecretScanner()
    key_id, secret = _aws_pair()
    found = {kind: scanner.scan_text(text, "f.txt") for kind, text in {
        "checksum": f"t = '{github_token('Mo2e')}'",
        "pair": f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}",
        "id_alone": f"key: {key_id}",
        "password": f"DB_PASSWORD={_password()}",
    }.items()}
    assert all(len(f) == 1 for f in found.values()), found
    one = {kind: f[0] for kind, f in found.items()}
    one["revoked"] = replace(one["pair"], verification="api", verified=False)  # a provider said: revoked
    one["live"] = replace(one["password"], verification="api", verified=True)
    expected = {
        "verified-only": {"checksum", "live"},
        "high-confidence": {"checksum", "live", "pair"},
        "all": {"checksum", "live", "pair", "id_alone", "password"},
    }
    for mode, kinds in expected.items():
        assert {k for k, f in one.items() if refuses(f, mode)} == kinds, mode
