"""Xet CAS rejections and tenant isolation, driven over HTTP with objects built by bastion.xet.

Corrupt or mislabelled xorbs, shards naming missing or foreign xorbs or lying about sha256, tokens
for another repo, expired or read-only tokens, fetch URLs used for another range: each a clear 4xx.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from bastion.authz import capability
from bastion.xet.hashing import hash_to_hex
from bastion.xet.packing import PackedFile, pack_file
from bastion.xet.shard import FileEntry, serialize_shard, sha256_field
from tests.conftest import BastionServer, MiB, hf_api
from tests.xet.hfclient import model_like


def _token(server: BastionServer, hub_token: str, repo_id: str, kind: str = "write") -> dict:
    r = httpx.get(f"{server.url}/api/models/{repo_id}/xet-{kind}-token/main",
                  headers={"Authorization": f"Bearer {hub_token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-xet-access-token"] == body["accessToken"]
    assert r.headers["x-xet-cas-url"] == body["casUrl"] and int(r.headers["x-xet-token-expiration"]) == body["exp"]
    return body


def _auth(tok: dict | str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok['accessToken'] if isinstance(tok, dict) else tok}"}


def _upload(tok: dict, packed: PackedFile) -> None:
    for body, xorb in packed.xorbs:
        r = httpx.post(f"{tok['casUrl']}/v1/xorbs/default/{xorb.hex}", content=body, headers=_auth(tok))
        assert r.status_code == 200, r.text
    r = httpx.post(f"{tok['casUrl']}/v1/shards", headers=_auth(tok),
                   content=serialize_shard([packed.file], packed.xorb_entries, with_footer=False))
    assert r.status_code == 200, r.text


@pytest.fixture
def two_repos(server: BastionServer) -> tuple[str, str, str, str]:
    """(owner token, repo A, repo B, token of another user) -- A and B private, both the owner's."""
    name, token = server.create_user()
    _, other = server.create_user()
    api = hf_api(server, token)
    for r in ("a", "b"):
        api.create_repo(f"{name}/{r}", private=True)
    return token, f"{name}/a", f"{name}/b", other


def test_token_routes_follow_the_hub_policy(server: BastionServer, two_repos: tuple[str, str, str, str]) -> None:
    token, repo_a, _, other = two_repos
    _, ro = server.create_user(role="read")
    tok = _token(server, token, repo_a)
    assert tok["casUrl"].startswith(server.url) and tok["exp"] > time.time() + 60
    # Another user's private repo is invisible; a read-only hub token gets no write token.
    for hub_token in (other, ro):
        r = httpx.get(f"{server.url}/api/models/{repo_a}/xet-read-token/main",
                      headers={"Authorization": f"Bearer {hub_token}"})
        assert r.status_code == 404 and r.headers["x-error-code"] == "RepoNotFound"
    r = httpx.get(f"{server.url}/api/models/{repo_a}/xet-read-token/no-such-branch",
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and r.headers["x-error-code"] == "RevisionNotFound"
    _, own_ro = server.create_user(role="read")
    public_owner, public_token = server.create_user()
    hf_api(server, public_token).create_repo(f"{public_owner}/pub")
    r = httpx.get(f"{server.url}/api/models/{public_owner}/pub/xet-write-token/main",
                  headers={"Authorization": f"Bearer {own_ro}"})
    assert r.status_code == 403
    assert httpx.get(f"{server.url}/api/models/{public_owner}/pub/xet-read-token/main").status_code == 200


def test_corrupt_and_mislabelled_xorbs_are_rejected(server: BastionServer,
                                                    two_repos: tuple[str, str, str, str]) -> None:
    token, repo_a, _, _ = two_repos
    tok = _token(server, token, repo_a)
    packed = pack_file([model_like(10, 300_000)])
    body, xorb = packed.xorbs[0]
    url = f"{tok['casUrl']}/v1/xorbs/default"
    corrupt = bytearray(body)
    corrupt[len(corrupt) // 2] ^= 0xFF
    r = httpx.post(f"{url}/{xorb.hex}", content=bytes(corrupt), headers=_auth(tok))
    assert r.status_code == 400 and r.headers["x-error-code"] == "InvalidXorb", r.text
    other_hash = hash_to_hex(hashlib.sha256(b"x").digest())
    r = httpx.post(f"{url}/{other_hash}", content=body, headers=_auth(tok))
    assert r.status_code == 400 and "hash mismatch" in r.json()["error"]
    r = httpx.post(f"{url}/not-a-hash", content=body, headers=_auth(tok))
    assert r.status_code == 400 and r.headers["x-error-code"] == "InvalidXetHash"
    r = httpx.post(f"{url}/{xorb.hex}", content=b"\0" * (64 * MiB + 1), headers=_auth(tok))
    assert r.status_code == 413

    def pieces(data: bytes, n: int = 65536):  # type: ignore[no-untyped-def]
        yield from (data[i : i + n] for i in range(0, len(data), n))

    # Without a Content-Length (chunked) the limit is enforced as the body arrives.
    r = httpx.post(f"{url}/{xorb.hex}", content=pieces(b"\0" * (64 * MiB + 1)), headers=_auth(tok))
    assert r.status_code == 413 and r.request.headers.get("transfer-encoding") == "chunked"
    r = httpx.post(f"{url}/{xorb.hex}", content=pieces(bytes(corrupt)), headers=_auth(tok))
    assert r.status_code == 400 and r.headers["x-error-code"] == "InvalidXorb", r.text
    assert r.request.headers.get("transfer-encoding") == "chunked"
    r = httpx.post(f"{url}/{xorb.hex}", content=body, headers=_auth(tok))
    assert r.status_code == 200 and r.json() == {"was_inserted": True}
    assert r.request.headers["content-length"] == str(len(body))
    r = httpx.post(f"{url}/{xorb.hex}", content=pieces(body), headers=_auth(tok))
    assert r.status_code == 200 and r.json() == {"was_inserted": False}
    r = httpx.post(f"{url}/{xorb.hex}", content=body, headers=_auth(tok))
    assert r.status_code == 200 and r.json() == {"was_inserted": False}


def test_shards_cannot_reference_missing_or_foreign_xorbs_or_lie(server: BastionServer,
                                                                 two_repos: tuple[str, str, str, str]) -> None:
    token, repo_a, repo_b, _ = two_repos
    tok_a, tok_b = _token(server, token, repo_a), _token(server, token, repo_b)
    secret = pack_file([model_like(11, 400_000)])
    _upload(tok_a, secret)  # repo A holds it
    shard = serialize_shard([secret.file], secret.xorb_entries, with_footer=False)
    # Repo B knows every hash of A's file but never uploaded the bytes: same answer as "missing".
    r = httpx.post(f"{tok_b['casUrl']}/v1/shards", content=shard, headers=_auth(tok_b))
    assert r.status_code == 400 and "does not exist" in r.json()["error"], r.text
    missing = pack_file([model_like(12, 200_000)])
    r = httpx.post(f"{tok_a['casUrl']}/v1/shards", headers=_auth(tok_a),
                   content=serialize_shard([missing.file], missing.xorb_entries, with_footer=False))
    assert r.status_code == 400 and "does not exist" in r.json()["error"]
    # A shard claiming another file's sha256 (to gain that LFS object) is caught by reconstruction.
    liar = pack_file([model_like(13, 250_000)])
    for body, xorb in liar.xorbs:
        assert httpx.post(f"{tok_b['casUrl']}/v1/xorbs/default/{xorb.hex}", content=body,
                          headers=_auth(tok_b)).status_code == 200
    stolen = FileEntry(liar.file.file_hash, liar.file.segments, liar.file.verification, secret.file.sha256)
    r = httpx.post(f"{tok_b['casUrl']}/v1/shards", headers=_auth(tok_b),
                   content=serialize_shard([stolen], liar.xorb_entries, with_footer=False))
    assert r.status_code == 400 and "sha256" in r.json()["error"]
    wrong = FileEntry(liar.file.file_hash, liar.file.segments, liar.file.verification,
                      sha256_field(hashlib.sha256(b"nope").digest()))
    r = httpx.post(f"{tok_b['casUrl']}/v1/shards", headers=_auth(tok_b),
                   content=serialize_shard([wrong], liar.xorb_entries, with_footer=False))
    assert r.status_code == 400
    assert httpx.post(f"{tok_b['casUrl']}/v1/shards", content=b"garbage", headers=_auth(tok_b)).status_code == 400
    # B cannot read A's file or learn A's chunks through dedupe; A can.
    file_id = hash_to_hex(secret.file.file_hash)
    assert httpx.get(f"{tok_b['casUrl']}/v1/reconstructions/{file_id}", headers=_auth(tok_b)).status_code == 404
    assert httpx.get(f"{tok_a['casUrl']}/v1/reconstructions/{file_id}", headers=_auth(tok_a)).status_code == 200
    first_chunk = hash_to_hex(secret.xorbs[0][1].chunks[0].hash)
    for prefix in ("default-merkledb", "default"):
        assert httpx.get(f"{tok_b['casUrl']}/v1/chunks/{prefix}/{first_chunk}", headers=_auth(tok_b)).status_code == 404
        r = httpx.get(f"{tok_a['casUrl']}/v1/chunks/{prefix}/{first_chunk}", headers=_auth(tok_a))
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"


def test_tokens_are_bound_to_repo_scope_and_time(server: BastionServer, two_repos: tuple[str, str, str, str]) -> None:
    token, repo_a, repo_b, _ = two_repos
    tok_a, tok_b = _token(server, token, repo_a), _token(server, token, repo_b)
    read_a = _token(server, token, repo_a, "read")
    packed = pack_file([model_like(14, 100_000)])
    body, xorb = packed.xorbs[0]
    target = f"{tok_a['casUrl']}/v1/xorbs/default/{xorb.hex}"
    r = httpx.post(target, content=body, headers=_auth(tok_b))
    assert r.status_code == 403 and "another repository" in r.json()["error"]
    r = httpx.post(target, content=body, headers=_auth(read_a))
    assert r.status_code == 403 and "read-only" in r.json()["error"]
    r = httpx.post(target, content=body)
    assert r.status_code == 401
    r = httpx.post(target, content=body, headers=_auth(tok_a["accessToken"] + "x"))
    assert r.status_code == 401 and r.json()["error"] == "Invalid Xet CAS token"
    key = (server.data_dir / "secret_key").read_bytes().strip()
    repo_num, _, repo_key = tok_a["casUrl"].rsplit("/r", 1)[1].partition("-")  # /xet-cas/r{id}-{incarnation}
    expired = capability.sign(key, "xet-cas", {"repo_id": int(repo_num), "repo_key": repo_key, "scope": "write",
                                               "ref": "main"}, -5)
    r = httpx.post(target, content=body, headers=_auth(expired))
    assert r.status_code == 401 and "expired" in r.json()["error"]
    # A hub access token is not a CAS token, and a CAS token is not a hub token.
    assert httpx.post(target, content=body, headers=_auth(token)).status_code == 401
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(tok_a)).status_code == 401
    # Refresh: a new token works.
    fresh = _token(server, token, repo_a)
    assert httpx.post(target, content=body, headers=_auth(fresh)).status_code == 200


def test_fetch_urls_serve_only_their_signed_range(server: BastionServer,
                                                  two_repos: tuple[str, str, str, str]) -> None:
    token, repo_a, _, _ = two_repos
    tok = _token(server, token, repo_a)
    data = model_like(15, 3 * MiB)
    packed = pack_file([data])
    _upload(tok, packed)
    file_id = hash_to_hex(packed.file.file_hash)
    for version in ("v1", "v2"):
        r = httpx.get(f"{tok['casUrl']}/{version}/reconstructions/{file_id}",
                      headers={**_auth(tok), "Range": "bytes=1000000-1999999"})
        assert r.status_code == 200, r.text
        plan = r.json()
        assert plan["offset_into_first_range"] > 0 or plan["terms"][0]["range"]["start"] > 0
    fetch = plan["xorbs"][plan["terms"][0]["hash"]][0]
    rng = fetch["ranges"][0]["bytes"]
    ok = httpx.get(fetch["url"], headers={"Range": f"bytes={rng['start']}-{rng['end']}"})
    assert ok.status_code == 206 and len(ok.content) == rng["end"] - rng["start"] + 1
    assert rng["start"] > 0  # the plan starts inside the xorb: a wider range is not signed
    assert httpx.get(fetch["url"], headers={"Range": f"bytes=0-{rng['end']}"}).status_code == 403
    assert httpx.get(fetch["url"], headers={"Range": f"bytes={rng['start']}-{rng['end'] + 1}"}).status_code == 403
    assert httpx.get(fetch["url"]).status_code == 403
    assert httpx.get(fetch["url"].replace("?t=", "?t=x"), headers={"Range": "bytes=0-1"}).status_code == 403
    r = httpx.get(f"{tok['casUrl']}/v1/reconstructions/{file_id}", headers={**_auth(tok), "Range": "bytes=99999999-"})
    assert r.status_code == 416
    assert httpx.get(f"{tok['casUrl']}/v1/reconstructions/{'0' * 64}", headers=_auth(tok)).status_code == 404


def test_gc_deletes_only_unreferenced_xorbs(server: BastionServer, two_repos: tuple[str, str, str, str],
                                            tmp_path: Path) -> None:
    token, repo_a, _, _ = two_repos
    tok = _token(server, token, repo_a)
    kept = pack_file([model_like(16, 500_000)])
    _upload(tok, kept)
    dropped = pack_file([model_like(18, 300_000)])
    _upload(tok, dropped)
    for path, packed in (("kept.bin", kept), ("dropped.bin", dropped)):
        line = {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": packed.file.sha256_hex,
                                            "size": packed.file.size}}
        r = httpx.post(f"{server.url}/api/models/{repo_a}/commit/main", content=json.dumps(
            {"key": "header", "value": {"summary": path}}) + "\n" + json.dumps(line),
                       headers={"Authorization": f"Bearer {token}", "content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
    api = hf_api(server, token)
    api.delete_file("dropped.bin", repo_a)
    api.super_squash_history(repo_a)  # no ref reaches dropped.bin any more; kept.bin is on main
    orphan_body, orphan = pack_file([model_like(17, 200_000)]).xorbs[0]
    assert httpx.post(f"{tok['casUrl']}/v1/xorbs/default/{orphan.hex}", content=orphan_body,
                      headers=_auth(tok)).status_code == 200
    xorbs = server.data_dir / "xet" / "xorbs"
    path_of = lambda h: xorbs / h[:2] / h[2:4] / h  # noqa: E731
    assert path_of(orphan.hex).is_file()
    out = server.cli("admin", "xet-gc", "--dry-run", "--grace-hours", "0").stdout
    assert "would remove" in out and path_of(orphan.hex).is_file()
    out = server.cli("admin", "xet-gc", "--grace-hours", "0").stdout
    assert "removed" in out
    assert not path_of(orphan.hex).exists()
    for _, x in kept.xorbs:
        assert path_of(x.hex).is_file()
    for _, x in dropped.xorbs:
        assert not path_of(x.hex).exists()
    r = httpx.get(f"{tok['casUrl']}/v1/reconstructions/{hash_to_hex(dropped.file.file_hash)}", headers=_auth(tok))
    assert r.status_code == 404
    file_id = hash_to_hex(kept.file.file_hash)
    assert httpx.get(f"{tok['casUrl']}/v1/reconstructions/{file_id}", headers=_auth(tok)).status_code == 200
    # The default grace period keeps a just-uploaded orphan (an upload may still be in flight).
    assert httpx.post(f"{tok['casUrl']}/v1/xorbs/default/{orphan.hex}", content=orphan_body,
                      headers=_auth(tok)).status_code == 200
    server.cli("admin", "xet-gc")
    assert path_of(orphan.hex).is_file()
