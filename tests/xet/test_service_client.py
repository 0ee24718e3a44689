"""The real huggingface_hub 2.4 + hf_xet client against Bastion's Xet CAS, with no Xet-disabling setting.

Uploads go through Xet (never the LFS batch API); downloads go through Xet and, for the same
files, through plain HTTP (HF_HUB_DISABLE_XET=1) and the LFS batch API, with equal sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.conftest import BastionServer, MiB, hf_api
from tests.xet.hfclient import (
    log_mark,
    model_like,
    reconstructions_since,
    run_cli,
    run_python,
    sha256_file,
    xorb_bytes_since,
)


def _lfs_batch_download(server: BastionServer, token: str, repo_id: str, oid: str, size: int) -> str:
    """What `git lfs pull` does: batch download, then GET the href."""
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", headers=auth, json={
        "operation": "download", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]})
    r.raise_for_status()
    action = r.json()["objects"][0]["actions"]["download"]
    h = hashlib.sha256()
    with httpx.stream("GET", action["href"], headers=action.get("header", {})) as resp:
        resp.raise_for_status()
        for block in resp.iter_bytes():
            h.update(block)
    return h.hexdigest()


def test_upload_file_50mb_then_download_every_way(server: BastionServer, user: tuple[str, str],
                                                   tmp_path: Path) -> None:
    name, token = user
    repo_id = f"{name}/xet-50mb"
    hf_api(server, token).create_repo(repo_id)
    src = tmp_path / "model.safetensors"
    src.write_bytes(model_like(1, 50 * MiB + 4321))
    want = sha256_file(src)
    mark = log_mark(server)
    run_python(server, token, tmp_path / "home-up", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="model.safetensors", repo_id={repo_id!r})
print(json.dumps(True))
""")
    log = server.server_log()[mark:]
    assert "xet shard upload" in log and "/info/lfs/objects/batch" not in log
    sent = xorb_bytes_since(server, mark)
    assert 0.5 * src.stat().st_size < sent <= src.stat().st_size * 1.01

    # Advertised on resolve and in the tree, with the LFS oid as the etag.
    head = httpx.head(f"{server.url}/{repo_id}/resolve/main/model.safetensors",
                      headers={"Authorization": f"Bearer {token}"})
    assert head.status_code == 200 and head.headers["x-linked-etag"].strip('"') == want
    assert len(head.headers["x-xet-hash"]) == 64 and 'rel="xet-auth"' in head.headers["link"]
    tree = hf_api(server, token).list_repo_tree(repo_id)
    entry = next(e for e in tree if e.path == "model.safetensors")
    assert entry.xet_hash == head.headers["x-xet-hash"] and entry.lfs.sha256 == want

    mark = log_mark(server)
    got = run_python(server, token, tmp_path / "home-dl", f"""
from huggingface_hub import hf_hub_download, snapshot_download
one = hf_hub_download({repo_id!r}, "model.safetensors", local_dir={str(tmp_path / "one")!r})
snap = snapshot_download({repo_id!r}, local_dir={str(tmp_path / "snap")!r})
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps([sha(one), sha(os.path.join(snap, "model.safetensors"))]))
""")
    assert got == [want, want]
    assert reconstructions_since(server, mark) >= 2  # both downloads went through Xet

    mark = log_mark(server)
    got = run_python(server, token, tmp_path / "home-http", f"""
from huggingface_hub import hf_hub_download, snapshot_download
one = hf_hub_download({repo_id!r}, "model.safetensors", local_dir={str(tmp_path / "h1")!r})
snap = snapshot_download({repo_id!r}, local_dir={str(tmp_path / "h2")!r})
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps([sha(one), sha(os.path.join(snap, "model.safetensors"))]))
""", xet=False)
    assert got == [want, want]
    assert reconstructions_since(server, mark) == 0  # plain HTTP: the server reconstructs, not the client
    assert _lfs_batch_download(server, token, repo_id, want, src.stat().st_size) == want
    # Stored once: as chunks in xorbs, never also copied whole into the LFS blob store.
    assert not [p for p in (server.data_dir / "lfs").rglob(want)]

    # Range requests on resolve serve the reconstructed bytes (inside one chunk, across chunk and xorb
    # boundaries, a suffix), with the headers of any other LFS file.
    data = src.read_bytes()
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{server.url}/{repo_id}/resolve/main/model.safetensors"
    for spec, (a, b) in {"bytes=1000-1999": (1000, 2000), "bytes=65000-9000000": (65000, 9000001),
                         "bytes=-777": (len(data) - 777, len(data)),
                         f"bytes={len(data) - 10}-": (len(data) - 10, len(data))}.items():
        r = httpx.get(url, headers={**auth, "Range": spec})
        assert r.status_code == 206 and r.content == data[a:b], spec
        assert r.headers["content-range"] == f"bytes {a}-{b - 1}/{len(data)}"
    assert httpx.get(url, headers={**auth, "Range": f"bytes={len(data)}-"}).status_code == 416
    head = httpx.head(url, headers=auth)
    assert head.headers["content-length"] == str(len(data)) and head.headers["accept-ranges"] == "bytes"


def test_upload_folder_and_hf_upload_cli(server: BastionServer, user: tuple[str, str], tmp_path: Path) -> None:
    name, token = user
    repo_id = f"{name}/xet-folder"
    hf_api(server, token).create_repo(repo_id, repo_type="dataset")
    folder = tmp_path / "folder"
    (folder / "shards").mkdir(parents=True)
    files = {"shards/a.bin": model_like(2, 12 * MiB), "shards/b.bin": model_like(3, 11 * MiB + 7),
             "README.md": b"# data\n", "config.json": b'{"x": 1}\n'}
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    mark = log_mark(server)
    run_python(server, token, tmp_path / "home", f"""
from huggingface_hub import HfApi
HfApi().upload_folder(folder_path={str(folder)!r}, repo_id={repo_id!r}, repo_type="dataset")
print(json.dumps(True))
""")
    single = tmp_path / "cli.bin"
    single.write_bytes(model_like(4, 15 * MiB))
    run_cli(server, token, tmp_path / "home", "upload", repo_id, str(single), "cli/cli.bin", "--repo-type", "dataset")
    assert "/info/lfs/objects/batch" not in server.server_log()[mark:]
    assert xorb_bytes_since(server, mark) > 20 * MiB  # 38 MiB of large files, LZ4 takes about 1/4
    files["cli/cli.bin"] = single.read_bytes()
    want = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}

    for xet in (True, False):
        dest = tmp_path / f"snap-{xet}"
        got = run_python(server, token, tmp_path / f"home-dl-{xet}", f"""
from huggingface_hub import snapshot_download
root = snapshot_download({repo_id!r}, repo_type="dataset", local_dir={str(dest)!r})
out = {{}}
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        rel = os.path.relpath(p, root)
        if not rel.startswith((".cache", ".gitattributes")):
            out[rel] = hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps(out))
""", xet=xet)
        assert got == want, f"xet={xet}"


def test_reupload_of_modified_file_sends_only_changed_chunks(server: BastionServer, user: tuple[str, str],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             ) -> None:
    """A fresh client cache each time: the savings come from Bastion's global-dedupe answers."""
    name, token = user
    repo_id = f"{name}/xet-dedupe"
    hf_api(server, token).create_repo(repo_id)
    original = model_like(5, 40 * MiB)
    edited = original[:17 * MiB] + b"a small edit in the middle" + original[17 * MiB + 100:]
    sent = []
    for i, data in enumerate((original, edited)):
        path = tmp_path / f"v{i}.bin"
        path.write_bytes(data)
        mark = log_mark(server)
        run_python(server, token, tmp_path / f"home-{i}", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(path)!r}, path_in_repo="w.bin", repo_id={repo_id!r})
print(json.dumps(True))
""")
        sent.append(xorb_bytes_since(server, mark))
    with capsys.disabled():
        print(f"\nxet dedupe: first upload sent {sent[0]} xorb bytes, re-upload of the edited "
              f"{len(edited)}-byte file sent {sent[1]} ({100 * sent[1] / len(edited):.2f}%)")
    assert sent[0] > 0.5 * len(original)
    assert sent[1] < 0.05 * len(edited)
    got = run_python(server, token, tmp_path / "home-dl", f"""
from huggingface_hub import hf_hub_download
p = hf_hub_download({repo_id!r}, "w.bin", local_dir={str(tmp_path / "dl")!r})
print(json.dumps(hashlib.sha256(open(p, "rb").read()).hexdigest()))
""")
    assert got == hashlib.sha256(edited).hexdigest()


def test_same_file_into_a_second_repo_from_the_same_machine(server: BastionServer, user: tuple[str, str],
                                                            tmp_path: Path) -> None:
    """The client's local dedupe cache is per CAS URL, i.e. per repo: the second repo gets the xorbs
    uploaded again (possession proved), instead of a shard referencing xorbs it may not use."""
    name, token = user
    api = hf_api(server, token)
    src = tmp_path / "w.bin"
    src.write_bytes(model_like(6, 12 * MiB))
    sent = []
    for repo in ("first", "second"):
        api.create_repo(f"{name}/{repo}")
        mark = log_mark(server)
        run_python(server, token, tmp_path / "home", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="w.bin", repo_id={f"{name}/{repo}"!r})
print(json.dumps(True))
""")
        sent.append(xorb_bytes_since(server, mark))
    assert sent[0] > 6 * MiB and sent[1] > 6 * MiB
    head = httpx.head(f"{server.url}/{name}/second/resolve/main/w.bin", headers={"Authorization": f"Bearer {token}"})
    assert head.headers["x-linked-etag"].strip('"') == sha256_file(src) and "x-xet-hash" in head.headers
