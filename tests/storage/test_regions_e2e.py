"""Storage regions end to end: a Bastion server with two S3 regions (`eu` and `us`, one bucket each on
moto's standalone server) beside the local `default`. The real clients upload (LFS batch API, multipart,
Xet, git push), download by every path (resolve, Xet reconstruction, git clone with LFS), the scanners
judge, garbage collection frees, fsck re-verifies -- and listing both buckets proves that no byte of
the `eu` repositories is in `us` and none of `us` in `eu`: deduplication never crosses regions.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.conftest import BastionServer, MiB, hf_api, random_binary, wait_for
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401
from tests.storage.conftest import MotoServer
from tests.xet.hfclient import model_like, run_python
from tests.xet.test_xet_other_paths import padded_malicious_pickle


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _create(server: BastionServer, token: str, name: str, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/api/repos/create", json={"name": name, **body},
                      headers={"authorization": f"Bearer {token}"}, timeout=60)


def _links(server: BastionServer) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From the server's database: region -> LFS oids and region -> xorbs its repositories link."""
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    oids: dict[str, set[str]] = {"default": set(), "eu": set(), "us": set()}
    xorbs: dict[str, set[str]] = {"default": set(), "eu": set(), "us": set()}
    with engine.connect() as conn:
        for key, oid in conn.execute(sa.text("SELECT r.storage_key, l.oid FROM repo_lfs_objects l "
                                             "JOIN repos r ON r.id = l.repo_id")):
            oids[key.split("/")[0] if "/" in key else "default"].add(oid)
        for key, xorb in conn.execute(sa.text("SELECT r.storage_key, x.xorb_hash FROM repo_xet_xorbs x "
                                              "JOIN repos r ON r.id = x.repo_id")):
            xorbs[key.split("/")[0] if "/" in key else "default"].add(xorb)
    engine.dispose()
    return oids, xorbs


def _stored(moto: MotoServer, bucket: str, prefix: str) -> dict[str, set[str]]:
    """The objects of one bucket by kind: {"lfs": oids, "xorbs": hashes, "shards": keys}."""
    out: dict[str, set[str]] = {"lfs": set(), "xorbs": set(), "shards": set(), "files": set(), "other": set()}
    for key in moto.keys(bucket):
        rest = key.removeprefix(prefix)
        name = rest.rsplit("/", 1)[-1]
        kind = "lfs" if rest.startswith("lfs/") else "xorbs" if rest.startswith("xet/xorbs/") else \
            "shards" if rest.startswith("xet/shards/") else "files" if rest.startswith("xet/files/") else "other"
        if "/.trash/" not in f"/{rest}":
            out[kind].add(name)
    return out


def test_every_byte_of_a_repository_lives_in_its_region(region_server: BastionServer, moto: MotoServer,
                                                        buckets: dict[str, str], git: Git,  # noqa: F811
                                                        tmp_path: Path) -> None:
    server = region_server
    name, token = server.create_user()
    api = hf_api(server, token)

    # ---- creation: the region asked for, a 400 naming the regions for an unknown one -------------
    refused = _create(server, token, "nowhere", region="mars")
    assert refused.status_code == 400
    assert refused.headers["x-error-message"] == ("Unknown storage region 'mars': this instance has the regions: "
                                                  "'default', 'eu', 'us'")
    assert not api.repo_exists(f"{name}/nowhere")
    repos = {"eu": f"{name}/in-eu", "us": f"{name}/in-us"}
    for region, repo_id in repos.items():
        assert _create(server, token, repo_id.split("/")[1], region=region).status_code == 200
        info = httpx.get(f"{server.url}/api/models/{repo_id}", headers={"authorization": f"Bearer {token}"}).json()
        assert info["region"] == region
    plain = f"{name}/plain"
    api.create_repo(plain)
    assert httpx.get(f"{server.url}/api/models/{plain}",
                     headers={"authorization": f"Bearer {token}"}).json()["region"] == "default"

    # ---- uploads: the same bytes to both regions, and bytes of each region's own ----------------
    rng = random.Random(21)
    shared = random_binary(2 * MiB + 1)
    own = {r: b"\x00" + rng.randbytes(3 * MiB + i) for i, r in enumerate(repos)}
    big_eu = b"\x00" + rng.randbytes(26 * MiB)  # over the server's multipart threshold (24 MiB)
    evil = padded_malicious_pickle(MiB)
    for region, repo_id in repos.items():
        api.upload_file(path_or_fileobj=shared, path_in_repo="shared.bin", repo_id=repo_id)
        api.upload_file(path_or_fileobj=own[region], path_in_repo="own.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=big_eu, path_in_repo="big.bin", repo_id=repos["eu"])
    api.upload_file(path_or_fileobj=evil, path_in_repo="model.pkl", repo_id=repos["eu"])
    # Through Xet (the real hf_xet client, in a child process): shared and own content again.
    xet_shared = model_like(7, 4 * MiB + 3)
    xet_own = {r: model_like(100 + i, 3 * MiB + 5) for i, r in enumerate(repos)}
    for region, repo_id in repos.items():
        for fname, data in (("xet-shared.safetensors", xet_shared), ("xet-own.safetensors", xet_own[region])):
            (tmp_path / f"{region}-{fname}").write_bytes(data)
        run_python(server, token, tmp_path / f"home-{region}", f"""
from huggingface_hub import HfApi, CommitOperationAdd
HfApi().create_commit({repo_id!r}, [CommitOperationAdd("xet-shared.safetensors", {str(tmp_path / f"{region}-xet-shared.safetensors")!r}),
    CommitOperationAdd("xet-own.safetensors", {str(tmp_path / f"{region}-xet-own.safetensors")!r})], commit_message="xet")
print(json.dumps(True))
""")
    # git push to the eu repository: a regular file and an LFS file.
    work = tmp_path / "eu-clone"
    handle = RepoHandle(server, name, token, repos["eu"])
    git("clone", "-q", handle.url(), str(work))
    pushed = b"\x00" + rng.randbytes(MiB + 9)
    (work / "pushed.bin").write_bytes(pushed)
    (work / "README.md").write_text("# in the eu\n")
    git.commit_all(work, "pushed from git")
    git("push", "-q", "origin", "main", cwd=work)

    # ---- downloads by every path ---------------------------------------------------------------
    expected = {"eu": {"shared.bin": shared, "own.bin": own["eu"], "big.bin": big_eu, "pushed.bin": pushed,
                       "xet-shared.safetensors": xet_shared, "xet-own.safetensors": xet_own["eu"]},
                "us": {"shared.bin": shared, "own.bin": own["us"], "xet-shared.safetensors": xet_shared,
                       "xet-own.safetensors": xet_own["us"]}}
    for region, files in expected.items():
        for fname, data in files.items():  # resolve (this process: no Xet)
            path = api.hf_hub_download(repos[region], fname, local_dir=tmp_path / f"dl-{region}")
            assert _sha(Path(path).read_bytes()) == _sha(data), (region, fname)
        ranged = httpx.get(f"{server.url}/{repos[region]}/resolve/main/own.bin", follow_redirects=True,
                           headers={"authorization": f"Bearer {token}", "range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == own[region][100:200]
        got = run_python(server, token, tmp_path / f"home-xdl-{region}", f"""
from huggingface_hub import hf_hub_download
out = {{}}
for f in ("xet-shared.safetensors", "xet-own.safetensors", "own.bin"):
    out[f] = hashlib.sha256(open(hf_hub_download({repos[region]!r}, f, local_dir={str(tmp_path / f"xdl-{region}")!r}), "rb").read()).hexdigest()
print(json.dumps(out))
""")
        assert got == {f: _sha(files[f]) for f in ("xet-shared.safetensors", "xet-own.safetensors", "own.bin")}
    clone = tmp_path / "eu-clone-2"
    git("clone", "-q", handle.url(), str(clone))  # git-lfs smudges every LFS file from the eu store
    for fname, data in expected["eu"].items():
        assert _sha((clone / fname).read_bytes()) == _sha(data), fname
    assert git("fsck", "--strict", cwd=clone).returncode == 0

    # ---- scans read the region's bytes ----------------------------------------------------------
    def scanned() -> dict[str, object] | None:
        sec = {e.path: e.security for e in api.list_repo_tree(repos["eu"], expand=True)
               if getattr(e, "security", None) is not None}
        wanted = {"shared.bin", "own.bin", "model.pkl", "xet-own.safetensors"}
        done = wanted <= set(sec) and all(sec[p].status not in ("unscanned", "queued", "pending") for p in wanted)
        return sec if done else None

    sec = wait_for(scanned, timeout=180, interval=0.5)
    assert sec["model.pkl"].status == "unsafe", sec["model.pkl"]
    assert sec["own.bin"].status == "safe" and sec["shared.bin"].status == "safe"

    # ---- where the bytes are: each region's bucket, and nowhere else -----------------------------
    oids, xorbs = _links(server)
    stored = {"eu": _stored(moto, buckets["eu"], "bastion/"), "us": _stored(moto, buckets["us"], "")}
    for region, other in (("eu", "us"), ("us", "eu")):
        # Everything stored in a region is linked by a repository of that region...
        assert stored[region]["lfs"] <= oids[region] and stored[region]["xorbs"] <= xorbs[region]
        assert stored[region]["xorbs"] == xorbs[region]  # ...and every xorb those repositories hold is there
        assert not stored[region]["other"]
        # The region's own bytes are not in the other one.
        assert _sha(own[region]) in stored[region]["lfs"] and _sha(own[region]) not in stored[other]["lfs"]
        own_xorbs = xorbs[region] - xorbs[other]
        assert own_xorbs and not own_xorbs & stored[other]["xorbs"]
    # Deduplication never crosses regions: the same bytes uploaded to both are stored in both.
    assert _sha(shared) in stored["eu"]["lfs"] and _sha(shared) in stored["us"]["lfs"]
    # (The Xet client packs each commit's files into xorbs of its own, so the file both uploaded is held
    # in chunks of each region's own xorbs: downloaded above from each, with its hash.)
    assert stored["eu"]["xorbs"] and stored["us"]["xorbs"]
    for oid in (_sha(big_eu), _sha(pushed), _sha(evil)):
        assert oid in stored["eu"]["lfs"] and oid not in stored["us"]["lfs"]
    # Nothing of either region on the default region's disk; each git repository under its region's root.
    data = server.data_dir
    assert not [p for p in (data / "lfs").rglob("*") if p.is_file()] if (data / "lfs").exists() else True
    assert not [p for p in (data / "xet").rglob("*") if p.is_file() and "by-oid" not in p.parts]
    engine = sa.create_engine(f"sqlite:///{data / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        keys = dict(conn.execute(sa.text("SELECT namespace || '/' || name, storage_key FROM repos")).all())
    engine.dispose()
    for region, repo_id in [*repos.items(), ("default", plain)]:
        key = keys[repo_id]
        assert key.startswith(f"{region}/") if region != "default" else "/" not in key
        bare = key.rpartition("/")[2]
        root = data / "repos" if region == "default" else data / "regions" / region / "repos"
        assert (root / bare[:2] / f"{bare}.git" / "HEAD").is_file()
        others = [data / "repos", *(data / "regions" / r / "repos" for r in repos if r != region)]
        assert not any((o / bare[:2] / f"{bare}.git").exists() for o in others if o != root)
    eu_staging = data / "regions" / "eu" / "tmp"
    assert eu_staging.is_dir()  # uploads and scans staged there

    # ---- garbage collection, per region -------------------------------------------------------
    doomed = f"{name}/doomed-eu"
    assert _create(server, token, "doomed-eu", region="eu").status_code == 200
    only_doomed = b"\x00" + rng.randbytes(MiB + 77)
    api.upload_file(path_or_fileobj=only_doomed, path_in_repo="a.bin", repo_id=doomed)
    api.upload_file(path_or_fileobj=own["us"], path_in_repo="b.bin", repo_id=doomed)  # also held in us
    assert _sha(own["us"]) in _stored(moto, buckets["eu"], "bastion/")["lfs"]
    api.delete_repo(doomed)
    out = server.cli("admin", "gc", "--grace-hours", "0").stdout
    assert "copies of LFS objects, Xet xorbs and shards in regions" in out, out
    after = {"eu": _stored(moto, buckets["eu"], "bastion/"), "us": _stored(moto, buckets["us"], "")}
    assert _sha(only_doomed) not in after["eu"]["lfs"]  # no repository links it: gone
    # Still held by the us repository: kept in us, removed from eu (no eu repository links it).
    assert _sha(own["us"]) in after["us"]["lfs"] and _sha(own["us"]) not in after["eu"]["lfs"]
    assert _sha(own["eu"]) in after["eu"]["lfs"] and _sha(shared) in after["eu"]["lfs"] | after["us"]["lfs"]
    # Every xorb an eu repository links is kept (copies no eu repository needs, left by other tests on
    # this shared server, are swept).
    assert _links(server)[1]["eu"] <= after["eu"]["xorbs"]
    for fname, data_ in expected["eu"].items():
        path = api.hf_hub_download(repos["eu"], fname, local_dir=tmp_path / "after-gc", force_download=True)
        assert _sha(Path(path).read_bytes()) == _sha(data_)

    # ---- fsck re-verifies both buckets --------------------------------------------------------
    report = json.loads(server.cli("admin", "fsck", "--json").stdout)
    assert all(not part["bad"] for part in report.values()), report
    assert report["lfs"]["checked"] >= len(after["eu"]["lfs"]) + len(after["us"]["lfs"])
    assert os.environ.get("BASTION_REGIONS") is None  # the test process itself is not configured
