"""Finding 11: failed authentications and uploads leave a trace in the audit log.

Unknown, malformed and unreadable credentials (API and git smart HTTP) are audited per source IP and
reason, at most once a window with a count, so a flood leaves a few counted events; revoked and expired
tokens are audited as uses of that token; bad passwords as failed sign-ins. Every upload -- LFS basic,
LFS multipart, Xet xorbs and files -- is audited with its repo, oid (or xorb hash) and size.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bastion.tokens import format as token_format
from tests.accounts.fixtures import PASSWORD, create_password_user, csrf_of, http_login
from tests.conftest import BastionServer, MiB, hf_api, wait_for
from tests.xet.hfclient import model_like, run_python

WINDOW = 3  # seconds: BASTION_AUDIT_REPEAT_WINDOW_SECONDS of this module's server
TIMEOUT = 30


@pytest.fixture(scope="module")
def audit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    """Behind a trusted proxy on loopback, so each test speaks from source IPs of its own."""
    server = BastionServer(tmp_path_factory.mktemp("bastion-audit"), env={
        "BASTION_AUDIT_REPEAT_WINDOW_SECONDS": str(WINDOW), "BASTION_TRUSTED_PROXIES": '["127.0.0.1/32"]'}).start()
    yield server
    server.stop()


def _events(server: BastionServer, where: str, **params: Any) -> list[dict[str, Any]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT id, action, actor_name, ip, token_id, target_type, target_id, namespace, details "
                f"FROM audit_events WHERE {where} ORDER BY id"), params).mappings().all()
    finally:
        engine.dispose()
    return [{**r, "details": json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]}
            for r in rows]


def _failures(server: BastionServer, ip: str) -> list[dict[str, Any]]:
    return _events(server, "action = 'token.auth_failed' AND target_id = :ip", ip=ip)


def _counts(events: list[dict[str, Any]]) -> dict[str, int]:
    """Occurrences per reason: the counts of the events that stand for them."""
    out: dict[str, int] = {}
    for e in events:
        out[e["details"]["reason"]] = out.get(e["details"]["reason"], 0) + e["details"]["count"]
    return out


def _unknown_token(seed: int) -> str:
    rng = random.Random(seed)
    head = token_format.PREFIX + "".join(rng.choice(token_format.ALPHABET) for _ in range(token_format.BODY_LEN))
    return head + token_format.checksum(head)


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def _token_id(server: BastionServer, token: str) -> int:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT id FROM access_tokens WHERE secret_hash = :h"),
                                    {"h": hashlib.sha256(token.encode()).hexdigest()}).scalar_one())
    finally:
        engine.dispose()


def test_bad_credentials_on_the_api_and_git_are_audited(audit_server: BastionServer) -> None:
    server = audit_server
    name, token = create_password_user(server)
    hf_api(server, token).create_repo(f"{name}/code")
    routes = {"api": ("198.51.100.1", "/api/whoami-v2"),
              "git": ("198.51.100.2", f"/{name}/code.git/info/refs?service=git-upload-pack")}
    presented = {
        "malformed token": _basic(name, PASSWORD),  # an account password where a token belongs
        "unknown token": _basic(name, _unknown_token(1)),
        "undecodable basic credentials": "Basic !!not-base64!!",
        "unsupported Authorization header": "Digest username=x",
    }
    for ip, path in routes.values():
        for header in presented.values():
            r = httpx.get(server.url + path, headers={"Authorization": header, "X-Forwarded-For": ip},
                          timeout=TIMEOUT)
            assert r.status_code == 401, (path, r.text)
        r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {_unknown_token(2)}",
                                                  "X-Forwarded-For": ip}, timeout=TIMEOUT)
        assert r.status_code == 401
    # Per source and reason: the second unknown token is counted with the first (folded into the
    # opening event's window, reported once that window is over, or opening the next one).
    expected = {reason: 2 if reason == "unknown token" else 1 for reason in presented}
    for ip, path in routes.values():
        events = wait_for(lambda ip=ip: _counts(got := _failures(server, ip)) == expected and got,
                          timeout=4 * WINDOW + 30)
        for e in events:
            assert e["ip"] == ip and e["target_type"] == "ip" and e["actor_name"] is None
            assert e["details"]["path"] == path.split("?")[0]
        assert len(events) <= 5

    # Known tokens past their end are audited as uses of that token, from the source that tried.
    web = http_login(server, name)
    token_id = _token_id(server, token)
    assert web.delete(f"/api/settings/tokens/{token_id}").status_code == 200
    expiring = server.admin("create-token", name, "--name", "soon", "--expires", "2099-01-01").stdout.strip()
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE access_tokens SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = :i"),
                     {"i": _token_id(server, expiring)})
    engine.dispose()
    for secret, reason, ip in ((token, "revoked token", "198.51.100.3"), (expiring, "expired token", "198.51.100.4")):
        for _, path in routes.values():
            for header in (f"Bearer {secret}", _basic(name, secret)):
                r = httpx.get(server.url + path, headers={"Authorization": header, "X-Forwarded-For": ip},
                              timeout=TIMEOUT)
                assert r.status_code == 401
        denied = wait_for(lambda ip=ip: _counts(got := _events(
            server, "action = 'token.use_denied' AND ip = :ip", ip=ip)) == {reason: 4} and got, timeout=4 * WINDOW + 30)
        assert denied[0]["details"]["count"] == 1  # the first use is recorded at once, the others counted
        assert all(e["namespace"] == name and e["target_type"] == "token" for e in denied)

    # Bad passwords at the web sign-in: a failed sign-in each (bounded by the sign-in rate limits).
    client = httpx.Client(base_url=server.url, headers={"X-Forwarded-For": "198.51.100.5"}, timeout=TIMEOUT)
    page = client.get("/login")
    r = client.post("/login", data={"csrf_token": csrf_of(page.text), "login": name, "password": "wrong-password"})
    assert r.status_code in (200, 400, 401)
    failed = _events(server, "action = 'user.login_failed' AND ip = '198.51.100.5'")
    assert len(failed) == 1 and failed[0]["namespace"] == name


def test_a_flood_of_bad_tokens_leaves_a_few_counted_events(audit_server: BastionServer) -> None:
    server = audit_server
    name, token = create_password_user(server)
    hf_api(server, token).create_repo(f"{name}/flooded")
    ip = "203.0.113.9"
    started = time.monotonic()
    with httpx.Client(base_url=server.url, headers={"X-Forwarded-For": ip}, timeout=TIMEOUT) as client:
        for i in range(200):
            if i % 2:
                r = client.get("/api/whoami-v2", headers={"Authorization": f"Bearer {_unknown_token(100 + i)}"})
            else:
                r = client.get(f"/{name}/flooded.git/info/refs", params={"service": "git-upload-pack"},
                               headers={"Authorization": _basic(name, _unknown_token(100 + i))})
            assert r.status_code == 401
    elapsed = time.monotonic() - started

    def counted() -> list[dict[str, Any]] | None:
        events = _failures(server, ip)
        return events if sum(e["details"]["count"] for e in events) >= 200 else None

    # Repeats are reported once their window is over, by the server itself (no further request).
    events = wait_for(counted, timeout=8 * WINDOW + 30)
    assert sum(e["details"]["count"] for e in events) == 200
    assert {e["details"]["reason"] for e in events} == {"unknown token"}
    assert events[0]["details"]["count"] == 1  # the first failure is recorded at once
    # At most two events per window: the one that opens it and the one reporting its repeats.
    windows = elapsed / WINDOW + 2
    assert len(events) <= 2 * windows, (len(events), elapsed)
    assert len(events) < 200 / 4


def _upload_events(server: BastionServer, name: str) -> list[dict[str, Any]]:
    return _events(server, "namespace = :ns AND action IN ('repo.lfs_object_store', 'repo.xet_upload')", ns=name)


def test_lfs_and_xet_uploads_are_audited_with_repo_oid_and_size(audit_server: BastionServer,
                                                                 tmp_path: Path) -> None:
    server = audit_server
    name, token = server.create_user()
    repo_id = f"{name}/uploads"
    api = hf_api(server, token)
    api.create_repo(repo_id)
    small, large = model_like(1101, 3 * MiB + 17), model_like(1102, 25 * MiB + 3)  # over the 24 MiB threshold
    api.upload_file(path_or_fileobj=small, path_in_repo="small.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=large, path_in_repo="large.bin", repo_id=repo_id)
    token_id = _token_id(server, token)

    lfs = [e for e in _upload_events(server, name) if e["action"] == "repo.lfs_object_store"]
    assert [(e["details"]["transfer"], e["details"]["oid"], e["details"]["size"]) for e in lfs] == [
        ("basic", hashlib.sha256(small).hexdigest(), len(small)),
        ("multipart", hashlib.sha256(large).hexdigest(), len(large))]
    for e in lfs:  # the actor is the user the upload URLs were minted for
        assert e["actor_name"] == name and e["target_id"] == f"model/{repo_id}" and e["ip"] == "127.0.0.1"

    src = tmp_path / "weights.bin"
    src.write_bytes(model_like(1103, 5 * MiB + 5))
    mark = max((e["id"] for e in _upload_events(server, name)), default=0)
    run_python(server, token, tmp_path / "home", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="weights.bin", repo_id={repo_id!r})
print(json.dumps(True))
""")
    xet = [e for e in _upload_events(server, name) if e["id"] > mark]
    xorbs = [e for e in xet if e["action"] == "repo.xet_upload"]
    files = [e for e in xet if e["action"] == "repo.lfs_object_store"]
    assert xorbs and all(len(e["details"]["xorb"]) == 64 and e["details"]["size"] > 0 for e in xorbs)
    assert 0.5 * src.stat().st_size < sum(e["details"]["size"] for e in xorbs) <= 1.01 * src.stat().st_size
    assert [(f["details"]["transfer"], f["details"]["oid"], f["details"]["size"]) for f in files] == [
        ("xet", hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_size)]
    assert len(files[0]["details"]["xet_file"]) == 64
    for e in xet:  # the actor is the user (and token) the CAS token was obtained with
        assert e["actor_name"] == name and e["token_id"] == token_id and e["target_id"] == f"model/{repo_id}"
