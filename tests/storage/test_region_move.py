"""Moving a repository between storage regions, killed with SIGKILL in the middle of each step and resumed:
afterwards `git fsck` is clean, every file (LFS, Xet, regular) downloads with its hash, its bytes are in the
target region's store and none in the source's (LFS objects, Xet xorbs, Xet shards, Xet file segment
records), the Xet file is downloaded by the Xet client (reconstruction) from the target, readers were served from the source until the switch, and
the switch is audited (`repo.update_region`)."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import BastionServer, MiB, hf_api, wait_for
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401
from tests.storage.conftest import MotoServer
from tests.xet.hfclient import log_mark, model_like, reconstructions_since, run_python


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cli(server: BastionServer, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(server.env)
    if fault:
        env["BASTION_FAULT_REGION_MOVE"] = fault
    return subprocess.run([sys.executable, "-m", "bastion.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def _move_state(server: BastionServer, repo_pk: int) -> str | None:
    engine = _db(server)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT state FROM region_moves WHERE repo_id = :r ORDER BY id DESC LIMIT 1"),
                           {"r": repo_pk}).first()
    engine.dispose()
    return row[0] if row else None


def _repo_row(server: BastionServer, repo_id: str) -> tuple[int, str]:
    engine = _db(server)
    ns, name = repo_id.split("/")
    with engine.connect() as conn:
        pk, key = conn.execute(sa.text("SELECT id, storage_key FROM repos WHERE namespace = :n AND name = :m"),
                               {"n": ns, "m": name}).one()
    engine.dispose()
    return int(pk), str(key)


def _objects_in(moto: MotoServer, bucket: str, prefix: str) -> set[str]:
    return {k.rsplit("/", 1)[-1] for k in moto.keys(bucket) if "/.trash/" not in k and k.startswith(prefix)}


def test_a_move_killed_at_every_step_resumes_and_loses_nothing(region_server: BastionServer, moto: MotoServer,
                                                              buckets: dict[str, str], git: Git,  # noqa: F811
                                                              tmp_path: Path) -> None:
    server = region_server
    name, token = server.create_user()
    api = hf_api(server, token)
    with httpx_client(server, token) as client:
        assert client.post("/api/repos/create", json={"name": "moving-eu", "region": "eu"}).status_code == 200
    repo_id = f"{name}/moving-eu"
    rng = random.Random(24)
    files = {"a.bin": b"\x00" + rng.randbytes(2 * MiB + 3), "b.bin": b"\x00" + rng.randbytes(7 * MiB + 1),
             "notes.txt": b"regular file in git\n"}
    for path, data in files.items():
        api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo_id)
    xet_data = model_like(31, 3 * MiB + 7)
    (tmp_path / "x.safetensors").write_bytes(xet_data)
    run_python(server, token, tmp_path / "home-x", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(tmp_path / "x.safetensors")!r}, path_in_repo="x.safetensors", repo_id={repo_id!r})
print(json.dumps(True))
""")
    files["x.safetensors"] = xet_data
    lfs_oids = {_sha(files["a.bin"]), _sha(files["b.bin"])}
    pk, _ = _repo_row(server, repo_id)
    prefixes = {"eu": "bastion/", "us": ""}

    def check_everything(region: str) -> None:
        _, key = _repo_row(server, repo_id)
        assert key.startswith(f"{region}/"), key
        info = api.model_info(repo_id)
        assert getattr(info, "region", None) in (region, None)  # the client may not keep the field
        for path, data in files.items():
            got = api.hf_hub_download(repo_id, path, local_dir=tmp_path / f"dl-{region}-{rng.random()}")
            assert _sha(Path(got).read_bytes()) == _sha(data), path
        clone = tmp_path / f"clone-{rng.random()}"
        git("clone", "-q", RepoHandle(server, name, token, repo_id).url(), str(clone))
        assert git("fsck", "--strict", "--no-dangling", cwd=clone).returncode == 0
        for path, data in files.items():
            assert _sha((clone / path).read_bytes()) == _sha(data), path
        other = "us" if region == "eu" else "eu"
        here = _objects_in(moto, buckets[region], prefixes[region] + "lfs/")
        there = _objects_in(moto, buckets[other], prefixes[other] + "lfs/")
        assert lfs_oids <= here and not lfs_oids & there
        xorbs_here = _objects_in(moto, buckets[region], prefixes[region] + "xet/xorbs/")
        xorbs_there = _objects_in(moto, buckets[other], prefixes[other] + "xet/xorbs/")
        engine = _db(server)
        with engine.connect() as conn:
            mine = {x for (x,) in conn.execute(sa.text("SELECT xorb_hash FROM repo_xet_xorbs WHERE repo_id = :r"),
                                               {"r": pk})}
        engine.dispose()
        assert mine and mine <= xorbs_here and not mine & xorbs_there
        # The shards that registered the repository's Xet files, and the files' segment records, moved too.
        engine = _db(server)
        with engine.connect() as conn:
            shards = {x for (x,) in conn.execute(sa.text(
                "SELECT shard_hash FROM repo_xet_shards WHERE repo_id = :r"), {"r": pk})}
            xet_files = {x for (x,) in conn.execute(sa.text(
                "SELECT file_hash FROM xet_files JOIN repo_lfs_objects ON repo_lfs_objects.oid = xet_files.sha256 "
                "WHERE repo_lfs_objects.repo_id = :r"), {"r": pk})}
        engine.dispose()
        assert shards and xet_files
        assert shards <= _objects_in(moto, buckets[region], prefixes[region] + "xet/shards/")
        assert not shards & _objects_in(moto, buckets[other], prefixes[other] + "xet/shards/")
        assert xet_files <= _objects_in(moto, buckets[region], prefixes[region] + "xet/files/")
        assert not xet_files & _objects_in(moto, buckets[other], prefixes[other] + "xet/files/")
        # The Xet client reconstructs the file from the target region's xorbs.
        mark = log_mark(server)
        got = run_python(server, token, tmp_path / f"home-dl-{region}-{rng.random()}", f"""
from huggingface_hub import hf_hub_download
p = hf_hub_download({repo_id!r}, "x.safetensors", local_dir={str(tmp_path / f"xdl-{region}-{rng.random()}")!r})
print(json.dumps(hashlib.sha256(open(p, "rb").read()).hexdigest()))
""")
        assert got == _sha(xet_data)
        assert reconstructions_since(server, mark) >= 1
        bare = key.rpartition("/")[2]
        data_dir = server.data_dir
        assert (data_dir / "regions" / region / "repos" / bare[:2] / f"{bare}.git").is_dir()
        assert not (data_dir / "regions" / other / "repos" / bare[:2] / f"{bare}.git").exists()

    check_everything("eu")
    region = "eu"
    for step in ("copy", "verify", "switch", "clean"):
        target = "us" if region == "eu" else "eu"
        killed = _cli(server, "admin", "move-region", repo_id, target, fault=step)
        assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
        assert _move_state(server, pk) == step
        if step in ("copy", "verify"):
            # Not switched: readers are served from the source, whole.
            assert _repo_row(server, repo_id)[1].startswith(f"{region}/")
            got = api.hf_hub_download(repo_id, "b.bin", local_dir=tmp_path / f"mid-{step}")
            assert _sha(Path(got).read_bytes()) == _sha(files["b.bin"])
        resumed = _cli(server, "admin", "move-region", repo_id, target)
        if resumed.returncode != 0:
            # The server's sweeper may have resumed the dead move first: it finishes it.
            assert "another worker is moving" in resumed.stderr, resumed.stderr[-2000:]
        wait_for(lambda: _move_state(server, pk) == "done", timeout=120, interval=0.5)
        check_everything(target)
        region = target

    engine = _db(server)
    with engine.connect() as conn:
        events = [json_details for (json_details,) in conn.execute(sa.text(
            "SELECT details FROM audit_events WHERE action = 'repo.update_region' AND target_id LIKE :t"),
            {"t": f"%{repo_id}"})]
    engine.dispose()
    assert len(events) == 4, events
    # Moving to where it is, or to a region the instance lacks, is refused.
    same = _cli(server, "admin", "move-region", repo_id, region)
    assert same.returncode == 0 and f"is in the region '{region}'" in same.stdout
    unknown = _cli(server, "admin", "move-region", repo_id, "mars")
    assert unknown.returncode != 0 and "Unknown storage region 'mars'" in unknown.stderr


def httpx_client(server: BastionServer, token: str):  # type: ignore[no-untyped-def]
    import httpx

    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60)
