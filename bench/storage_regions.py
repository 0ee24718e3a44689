"""Benchmark: storage regions on S3-compatible object storage.

1. A 1 GiB LFS upload and download (git-lfs basic transfer, `resolve`) into a repository of a region whose
   store is an S3 bucket, and the same into a repository of the local-disk region, in the same run (ratio).
2. The time to move a repository of 2 GiB (two 1 GiB LFS files) from the local region to the S3 region
   (`bastion admin move-region`: copy, verify every hash, switch, clean).

The S3 service is moto's standalone server on loopback (the only one this machine has): it keeps objects
in memory, in one Python process, so the figures bound what Bastion's S3 path costs on 2 cores rather
than what a real S3 endpoint would give. Run from the repository root:
`.venv/bin/python -m bench.storage_regions [--size-mib 1024]`. Prints figures; asserts nothing but
correctness (every byte read back hashes right).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import BastionServer
from tests.storage.conftest import MotoServer

MiB = 1024 * 1024


def make_file(path: Path, size: int, seed: int) -> str:
    """A file of `size` bytes (a repeated random block, distinct per seed); returns its sha256."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    h = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            piece = block[:min(left, len(block))]
            piece = (seed.to_bytes(4, "big") + piece)[:len(piece)]
            fh.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


def lfs_upload(server: BastionServer, token: str, repo: str, path: Path, oid: str) -> float:
    size = path.stat().st_size
    auth = {"authorization": f"Bearer {token}"}
    batch = httpx.post(f"{server.url}/{repo}.git/info/lfs/objects/batch", headers=auth, timeout=60,
                       json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]})
    action = batch.json()["objects"][0]["actions"]["upload"]

    def chunks():  # type: ignore[no-untyped-def]
        with path.open("rb") as fh:
            while block := fh.read(4 * MiB):
                yield block

    start = time.perf_counter()
    resp = httpx.put(action["href"], content=chunks(), headers={**action.get("header", {}),
                                                                "content-length": str(size)}, timeout=3600)
    elapsed = time.perf_counter() - start
    assert resp.status_code == 200, resp.text
    line = {"key": "lfsFile", "value": {"path": path.name, "algo": "sha256", "oid": oid, "size": size}}
    header = {"key": "header", "value": {"summary": f"add {path.name}", "description": ""}}
    commit = httpx.post(f"{server.url}/api/models/{repo}/commit/main", headers={**auth,
                        "content-type": "application/x-ndjson"}, timeout=600,
                        content=b"\n".join(json.dumps(x).encode() for x in (header, line)))
    assert commit.status_code == 200, commit.text
    return elapsed


def download(server: BastionServer, token: str, repo: str, name: str, oid: str) -> float:
    h = hashlib.sha256()
    start = time.perf_counter()
    with httpx.stream("GET", f"{server.url}/{repo}/resolve/main/{name}", timeout=3600,
                      headers={"authorization": f"Bearer {token}"}) as resp:
        assert resp.status_code == 200
        for block in resp.iter_bytes(4 * MiB):
            h.update(block)
    elapsed = time.perf_counter() - start
    assert h.hexdigest() == oid
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-regions-"))
    moto = MotoServer(work / "moto.log").start()
    try:
        bucket = moto.new_bucket("bench")
        # moto assembles a multipart object in one request: give it time on a busy machine.
        regions = {"default": {}, "s3": {"store": moto.store_settings(bucket, read_timeout=900)}}
        server = BastionServer(work / "srv", env={"BASTION_REGIONS": json.dumps(regions), "BASTION_SCANNERS": "[]",
                                                  "BASTION_MAX_LFS_OBJECT_SIZE": str(8 * 1024 * MiB),
                                                  "BASTION_REGION_MOVE_GRACE_SECONDS": "0"}).start()
        try:
            name, token = server.create_user()
            auth = {"authorization": f"Bearer {token}"}
            for repo, region in (("local", "default"), ("ons3", "s3"), ("mover", "default")):
                assert httpx.post(f"{server.url}/api/repos/create", headers=auth, timeout=60,
                                  json={"name": repo, "region": region}).status_code == 200
            payload = work / "weights.bin"
            oid = make_file(payload, size, 1)
            figures: dict[str, float] = {}
            for repo, label in (("local", "local"), ("ons3", "s3")):
                figures[f"upload_{label}_s"] = lfs_upload(server, token, f"{name}/{repo}", payload, oid)
                figures[f"download_{label}_s"] = download(server, token, f"{name}/{repo}", "weights.bin", oid)
            payload.unlink()
            # The 2 GiB repository to move: two files of `size` bytes each.
            oids = {}
            for i in (2, 3):
                part = work / f"part{i}.bin"
                oids[part.name] = make_file(part, size, i)
                lfs_upload(server, token, f"{name}/mover", part, oids[part.name])
                part.unlink()
            start = time.perf_counter()
            moved = subprocess.run([sys.executable, "-m", "bastion.cli", "admin", "move-region", f"{name}/mover", "s3"],
                                   env=server.env, capture_output=True, text=True, timeout=7200)
            figures["move_2x_s"] = time.perf_counter() - start
            assert moved.returncode == 0, moved.stderr[-3000:]
            for fname, foid in oids.items():  # every byte there, read from the new region
                download(server, token, f"{name}/mover", fname, foid)
        finally:
            server.stop()
    finally:
        moto.stop()
    gib = size / (1024 * MiB)
    print(f"object size: {args.size_mib} MiB; S3: moto standalone server on loopback (in-memory)")
    for label in ("local", "s3"):
        up, down = figures[f"upload_{label}_s"], figures[f"download_{label}_s"]
        print(f"{label:>5}: upload {up:7.2f} s ({gib / up * 1024:7.1f} MiB/s), "
              f"download {down:7.2f} s ({gib / down * 1024:7.1f} MiB/s)")
    print(f"S3 / local time ratio: upload {figures['upload_s3_s'] / figures['upload_local_s']:.2f}x, "
          f"download {figures['download_s3_s'] / figures['download_local_s']:.2f}x")
    print(f"move of a {2 * args.size_mib} MiB repository (local -> S3 region, copy + verify + switch + clean): "
          f"{figures['move_2x_s']:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
