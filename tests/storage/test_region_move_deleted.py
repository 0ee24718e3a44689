"""A repository deleted in the middle of its region move: the move ends as `gone` and the copy the
repository did not live in is removed -- before the switch the target's git copy and every object copied
into the target region (LFS, xorbs, shards), after the switch the source's -- except what another
repository of that region still needs."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.conftest import BastionServer, MiB, hf_api, wait_for
from tests.storage.conftest import MotoServer
from tests.storage.test_region_move import _cli, _db, _objects_in, _repo_row, _sha
from tests.xet.hfclient import model_like, run_python

PREFIXES = {"eu": "bastion/", "us": ""}


def _move(server: BastionServer, pk: int) -> tuple[int, str]:
    engine = _db(server)
    with engine.connect() as conn:
        move_id, state = conn.execute(sa.text("SELECT id, state FROM region_moves WHERE repo_id = :r "
                                              "ORDER BY id DESC LIMIT 1"), {"r": pk}).one()
    engine.dispose()
    return int(move_id), str(state)


def _state(server: BastionServer, move_id: int) -> tuple[str, int | None]:
    engine = _db(server)
    with engine.connect() as conn:
        state, repo = conn.execute(sa.text("SELECT state, repo_id FROM region_moves WHERE id = :i"),
                                   {"i": move_id}).one()
    engine.dispose()
    return str(state), repo


def _links(server: BastionServer, pk: int) -> dict[str, set[str]]:
    engine = _db(server)
    with engine.connect() as conn:
        out = {kind: {x for (x,) in conn.execute(sa.text(f"SELECT {col} FROM {table} WHERE repo_id = :r"),
                                                {"r": pk})}
               for kind, table, col in (("lfs", "repo_lfs_objects", "oid"), ("xorbs", "repo_xet_xorbs", "xorb_hash"),
                                        ("shards", "repo_xet_shards", "shard_hash"))}
    engine.dispose()
    return out


def _stored(moto: MotoServer, buckets: dict[str, str], region: str) -> dict[str, set[str]]:
    p = PREFIXES[region]
    return {"lfs": _objects_in(moto, buckets[region], p + "lfs/"),
            "xorbs": _objects_in(moto, buckets[region], p + "xet/xorbs/"),
            "shards": _objects_in(moto, buckets[region], p + "xet/shards/")}


def _git_dir(server: BastionServer, region: str, key: str) -> Path:
    bare = key.rpartition("/")[2]
    return server.data_dir / "regions" / region / "repos" / bare[:2] / f"{bare}.git"


def test_a_repository_deleted_during_its_move(region_server: BastionServer, moto: MotoServer,
                                              buckets: dict[str, str], tmp_path: Path) -> None:
    server = region_server
    name, token = server.create_user()
    api = hf_api(server, token)
    rng = random.Random(404)
    shared = b"\x00" + rng.randbytes(MiB + 11)  # also held by a repository living in us: kept there
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
        for repo, region in (("del-before", "eu"), ("del-after", "eu"), ("keeps-us", "us")):
            assert client.post("/api/repos/create", json={"name": repo, "region": region}).status_code == 200
    api.upload_file(path_or_fileobj=shared, path_in_repo="shared.bin", repo_id=f"{name}/keeps-us")
    for repo in ("del-before", "del-after"):
        repo_id = f"{name}/{repo}"
        api.upload_file(path_or_fileobj=b"\x00" + rng.randbytes(2 * MiB + 3), path_in_repo="own.bin",
                        repo_id=repo_id)
        api.upload_file(path_or_fileobj=shared, path_in_repo="shared.bin", repo_id=repo_id)
        src = tmp_path / f"{repo}.safetensors"
        src.write_bytes(model_like(rng.randrange(1 << 30), 2 * MiB + 1))
        run_python(server, token, tmp_path / f"home-{repo}", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="x.safetensors", repo_id={repo_id!r})
print(json.dumps(True))
""")

    def delete(repo: str) -> None:
        httpx.request("DELETE", f"{server.url}/api/repos/delete", json={"name": repo},
                      headers={"authorization": f"Bearer {token}"}, timeout=60).raise_for_status()

    # ---- before the switch: killed after copying everything into us, then deleted ------------------
    pk, key = _repo_row(server, f"{name}/del-before")
    mine = _links(server, pk)
    mine["lfs"] &= _stored(moto, buckets, "eu")["lfs"]  # a Xet file's oid is stored as chunks only
    assert len(mine["lfs"]) == 2 and mine["xorbs"] and mine["shards"]
    killed = _cli(server, "admin", "move-region", f"{name}/del-before", "us", fault="verify")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    move_id, state = _move(server, pk)
    assert state == "verify"
    us = _stored(moto, buckets, "us")
    assert all(mine[k] <= us[k] for k in mine), "the copy step copied everything into us"
    target_git = _git_dir(server, "us", f"us/{key}")
    assert target_git.is_dir()
    delete("del-before")
    wait_for(lambda: _state(server, move_id)[0] == "gone", timeout=120, interval=0.5)
    assert _state(server, move_id)[1] is None  # the row outlived its repository
    us = _stored(moto, buckets, "us")
    assert not (mine["lfs"] - {_sha(shared)}) & us["lfs"]
    assert _sha(shared) in us["lfs"]  # keeps-us, living in us, still needs it
    assert not mine["xorbs"] & us["xorbs"] and not mine["shards"] & us["shards"]
    assert not target_git.exists() and not target_git.with_name(target_git.name + ".incoming").exists()
    assert not _git_dir(server, "eu", f"eu/{key}").exists()  # the deletion removed the source

    first = mine
    # ---- after the switch: killed while cleaning, then deleted: the source copy goes -------------
    pk, key = _repo_row(server, f"{name}/del-after")
    mine = _links(server, pk)
    mine["lfs"] &= _stored(moto, buckets, "eu")["lfs"]
    killed = _cli(server, "admin", "move-region", f"{name}/del-after", "us", fault="clean")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    move_id, state = _move(server, pk)
    assert state == "clean" and _repo_row(server, f"{name}/del-after")[1].startswith("us/")
    source_git = _git_dir(server, "eu", f"eu/{key}")
    assert source_git.is_dir() and mine["lfs"] <= _stored(moto, buckets, "eu")["lfs"]
    delete("del-after")
    wait_for(lambda: _state(server, move_id)[0] == "gone", timeout=120, interval=0.5)
    eu = _stored(moto, buckets, "eu")
    assert not mine["lfs"] & eu["lfs"] and not mine["xorbs"] & eu["xorbs"] and not mine["shards"] & eu["shards"]
    assert not source_git.exists() and not _git_dir(server, "us", f"us/{key}").exists()
    # The repository that shares a file still serves it.
    got = api.hf_hub_download(f"{name}/keeps-us", "shared.bin", local_dir=tmp_path / "dl")
    assert _sha(Path(got).read_bytes()) == _sha(shared)
    # What the deleted repositories left where they lived is garbage collection's (as for any deleted
    # repository): afterwards neither bucket holds a byte of either, and the shared server is tidy again.
    server.cli("admin", "gc", "--grace-hours", "0")
    eu, us = _stored(moto, buckets, "eu"), _stored(moto, buckets, "us")
    for kind in ("lfs", "xorbs", "shards"):
        left = (first[kind] | mine[kind]) - ({_sha(shared)} if kind == "lfs" else set())
        assert not left & eu[kind] and not left & us[kind], kind
    assert _sha(shared) in us["lfs"]
