"""Storage garbage collection (`bastion admin gc`): the bytes of large files no ref reaches are freed;
anything a branch, tag, pull-request ref or their history reaches, or anything used within the grace
period, is kept. On both databases, with a dedicated server (collection is instance-wide)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd, hf_hub_download

from tests.conftest import BastionServer, create_pg_database, drop_pg_database, hf_api

HEADER = {"key": "header", "value": {"summary": "s", "description": ""}}


@pytest.fixture(params=["sqlite", "postgresql"])
def gc_server(request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str) -> Iterator[BastionServer]:
    dbname, url = create_pg_database(pg_admin_url) if request.param == "postgresql" else (None, None)
    server = BastionServer(tmp_path / "srv", database_url=url).start()
    yield server
    server.stop()
    if dbname:
        drop_pg_database(pg_admin_url, dbname)


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(server.env.get("BASTION_DATABASE_URL") or f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def _on_disk(server: BastionServer, oid: str) -> bool:
    return any(p.name == oid for p in (server.data_dir / "lfs").rglob(oid))


def _linked(server: BastionServer, oid: str) -> int:
    with _db(server).connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM repo_lfs_objects WHERE oid = :o"), {"o": oid}).scalar())


def _object_row(server: BastionServer, oid: str) -> bool:
    with _db(server).connect() as conn:
        return bool(conn.execute(sa.text("SELECT count(*) FROM lfs_objects WHERE oid = :o"), {"o": oid}).scalar())


def _gc_events(server: BastionServer) -> list[dict[str, object]]:
    with _db(server).connect() as conn:
        rows = conn.execute(sa.text("SELECT details, via FROM audit_events WHERE action = 'instance.storage_gc' "
                                    "ORDER BY id")).all()
    assert all(via == "cli" for _, via in rows)
    return [d if isinstance(d, dict) else json.loads(d) for d, _ in rows]


def _upload_only(server: BastionServer, token: str, repo_id: str, data: bytes) -> str:
    """An LFS upload whose commit never comes (a client that died in between)."""
    oid = hashlib.sha256(data).hexdigest()
    batch = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", headers={"authorization": f"Bearer {token}"},
                       json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]})
    action = batch.json()["objects"][0]["actions"]["upload"]
    assert httpx.put(action["href"], content=data, headers=action.get("header", {})).status_code == 200
    return oid


def _lfs_commit(server: BastionServer, token: str, repo_id: str, path: str, oid: str, size: int) -> httpx.Response:
    line = {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}
    return httpx.post(f"{server.url}/api/models/{repo_id}/commit/main",
                      content=b"\n".join(json.dumps(x).encode() for x in (HEADER, line)),
                      headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"})


def test_gc_frees_only_what_no_ref_reaches(gc_server: BastionServer, tmp_path: Path) -> None:
    server = gc_server
    name, token = server.create_user()
    api = hf_api(server, token)
    blobs = {k: os.urandom(3000) for k in ("keep", "gone", "side", "pr", "pending", "dead", "shared")}
    oid = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    repo, other, doomed = f"{name}/main-repo", f"{name}/other", f"{name}/deleted"
    for r in (repo, other, doomed):
        api.create_repo(r)
    api.create_commit(repo, commit_message="files", operations=[
        CommitOperationAdd("keep.bin", blobs["keep"]), CommitOperationAdd("gone.bin", blobs["gone"]),
        CommitOperationAdd("shared.bin", blobs["shared"])])
    api.delete_files(repo, ["gone.bin", "shared.bin"])
    api.super_squash_history(repo)  # gone.bin and shared.bin are in no commit of main any more
    api.create_branch(repo, branch="side")
    api.upload_file(path_or_fileobj=blobs["side"], path_in_repo="side.bin", repo_id=repo, revision="side")
    api.upload_file(path_or_fileobj=blobs["pr"], path_in_repo="pr.bin", repo_id=repo, create_pr=True)
    api.upload_file(path_or_fileobj=blobs["shared"], path_in_repo="shared.bin", repo_id=other)
    api.upload_file(path_or_fileobj=blobs["dead"], path_in_repo="dead.bin", repo_id=doomed)
    api.delete_repo(doomed)
    _upload_only(server, token, repo, blobs["pending"])
    assert all(_on_disk(server, o) for o in oid.values())

    # Within the default grace period (24 h) nothing is touched.
    out = server.cli("admin", "gc").stdout
    assert "removed 0 repository links" in out and "0 LFS objects" in out
    # A dry run reports what would go and removes nothing.
    out = server.cli("admin", "gc", "--dry-run", "--grace-hours", "0").stdout
    assert "would remove 3 repository links to unreachable files and 3 LFS objects (9000 bytes)" in out, out
    assert all(_on_disk(server, o) for o in oid.values())

    assert [e["objectsRemoved"] for e in _gc_events(server)] == [0]  # the run within the grace; dry runs are not
    out = server.cli("admin", "gc", "--grace-hours", "0").stdout
    assert "removed 3 repository links to unreachable files and 3 LFS objects (9000 bytes)" in out, out
    events = _gc_events(server)
    assert events[-1]["objectsRemoved"] == 3 and events[-1]["objectBytesFreed"] == 9000 \
        and events[-1]["graceHours"] == 0 and len(events) == 2  # the default-grace run is recorded too
    for kept in ("keep", "side", "pr", "shared"):
        assert _on_disk(server, oid[kept]) and _object_row(server, oid[kept]), kept
    for gone in ("gone", "pending", "dead"):
        assert not _on_disk(server, oid[gone]) and not _object_row(server, oid[gone]), gone
    assert _linked(server, oid["shared"]) == 1  # only the repo that still has it
    for path, rev in (("keep.bin", "main"), ("side.bin", "side"), ("pr.bin", "refs/pr/1")):
        got = hf_hub_download(repo, path, revision=rev, endpoint=server.url, token=token, cache_dir=tmp_path / "c")
        assert Path(got).read_bytes() == blobs[path.split(".")[0]]
    # Possession must be proved again: the repo's link to shared.bin's bytes went with its last ref.
    resp = _lfs_commit(server, token, repo, "again.bin", oid["shared"], 3000)
    assert resp.status_code == 400 and "was not uploaded to this repository" in resp.json()["error"]
    # Uploading collected bytes again stores them again.
    api.upload_file(path_or_fileobj=blobs["pending"], path_in_repo="pending.bin", repo_id=repo)
    assert _on_disk(server, oid["pending"])
    got = hf_hub_download(repo, "pending.bin", endpoint=server.url, token=token, cache_dir=tmp_path / "d")
    assert Path(got).read_bytes() == blobs["pending"]
    # A second collection finds nothing more.
    assert "removed 0 repository links to unreachable files and 0 LFS objects" in \
        server.cli("admin", "gc", "--grace-hours", "0").stdout


def test_a_commit_marks_the_objects_it_references_used(gc_server: BastionServer) -> None:
    """A commit of an old upload (or of an object referenced again) marks the link it checks as used, so
    a collection whose snapshot of the refs predates the commit keeps it (its DELETE re-checks the mark)."""
    server = gc_server
    name, token = server.create_user()
    repo = f"{name}/late"
    hf_api(server, token).create_repo(repo)
    data = os.urandom(2048)
    digest = _upload_only(server, token, repo, data)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    with _db(server).begin() as conn:  # as if the upload happened long ago
        conn.execute(sa.text("UPDATE repo_lfs_objects SET last_used_at = :t WHERE oid = :o"), {"t": long_ago, "o": digest})
    assert _lfs_commit(server, token, repo, "late.bin", digest, len(data)).status_code == 200
    with _db(server).connect() as conn:
        used = conn.execute(sa.text("SELECT last_used_at FROM repo_lfs_objects WHERE oid = :o"), {"o": digest}).scalar()
    assert not str(used).startswith("2000")
    assert "removed 0 repository links" in server.cli("admin", "gc", "--grace-hours", "1").stdout
    assert _on_disk(server, digest)
