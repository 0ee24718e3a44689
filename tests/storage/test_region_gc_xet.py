"""Garbage collection's region sweep covers Xet: a region's copy of a xorb or shard that no repository of
that region needs any more (the repository there was deleted; the same file lives on in another region)
is removed from that region's bucket, while the file stays downloadable (Xet reconstruction) where it
still lives and another repository's xorbs and shards of the same region are kept."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.conftest import BastionServer, MiB
from tests.storage.conftest import MotoServer
from tests.storage.test_regions_e2e import _stored
from tests.xet.hfclient import log_mark, model_like, reconstructions_since, run_python


def _create(server: BastionServer, token: str, name: str, region: str) -> None:
    resp = httpx.post(f"{server.url}/api/repos/create", json={"name": name, "region": region},
                      headers={"authorization": f"Bearer {token}"}, timeout=60)
    assert resp.status_code == 200, resp.text


def _xet_upload(server: BastionServer, token: str, home: Path, src: Path, repo_id: str) -> None:
    run_python(server, token, home, f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="w.safetensors", repo_id={repo_id!r})
print(json.dumps(True))
""")


def _linked(server: BastionServer, repo_id: str) -> tuple[set[str], set[str]]:
    ns, name = repo_id.split("/")
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        pk = conn.execute(sa.text("SELECT id FROM repos WHERE namespace = :n AND name = :m"),
                          {"n": ns, "m": name}).scalar_one()
        xorbs = {x for (x,) in conn.execute(sa.text("SELECT xorb_hash FROM repo_xet_xorbs WHERE repo_id = :r"),
                                            {"r": pk})}
        shards = {x for (x,) in conn.execute(sa.text("SELECT shard_hash FROM repo_xet_shards WHERE repo_id = :r"),
                                             {"r": pk})}
    engine.dispose()
    return xorbs, shards


def test_region_sweep_removes_xorbs_and_shards_no_repository_there_needs(
        region_server: BastionServer, moto: MotoServer, buckets: dict[str, str], tmp_path: Path) -> None:
    server = region_server
    name, token = server.create_user()
    data = model_like(77, 2 * MiB + 5)
    other = model_like(78, MiB + 9)
    (tmp_path / "w.safetensors").write_bytes(data)
    (tmp_path / "o.safetensors").write_bytes(other)
    doomed, keeper, kept_eu = f"{name}/gc-doomed-eu", f"{name}/gc-keeper-us", f"{name}/gc-kept-eu"
    _create(server, token, "gc-doomed-eu", "eu")
    _create(server, token, "gc-keeper-us", "us")
    _create(server, token, "gc-kept-eu", "eu")
    _xet_upload(server, token, tmp_path / "h1", tmp_path / "w.safetensors", doomed)
    _xet_upload(server, token, tmp_path / "h2", tmp_path / "w.safetensors", keeper)  # the same file, in us
    _xet_upload(server, token, tmp_path / "h3", tmp_path / "o.safetensors", kept_eu)
    doomed_xorbs, doomed_shards = _linked(server, doomed)
    keeper_xorbs, keeper_shards = _linked(server, keeper)
    kept_xorbs, kept_shards = _linked(server, kept_eu)
    assert doomed_xorbs and doomed_shards and keeper_xorbs and kept_xorbs and kept_shards
    eu = _stored(moto, buckets["eu"], "bastion/")
    assert doomed_xorbs <= eu["xorbs"] and doomed_shards <= eu["shards"]

    httpx.request("DELETE", f"{server.url}/api/repos/delete", json={"name": "gc-doomed-eu"},
                  headers={"authorization": f"Bearer {token}"}, timeout=60).raise_for_status()
    dry = server.cli("admin", "gc", "--grace-hours", "0", "--dry-run").stdout
    assert doomed_xorbs <= _stored(moto, buckets["eu"], "bastion/")["xorbs"]  # a dry run removes nothing
    assert "Xet xorbs and shards in regions" in dry, dry
    out = server.cli("admin", "gc", "--grace-hours", "0").stdout
    assert "Xet xorbs and shards in regions" in out, out

    eu, us = _stored(moto, buckets["eu"], "bastion/"), _stored(moto, buckets["us"], "")
    # The deleted eu repository's xorbs and shards: gone from eu (the file lives on in us only) ...
    assert not (doomed_xorbs - kept_xorbs) & eu["xorbs"], (doomed_xorbs, eu["xorbs"])
    assert not doomed_shards & eu["shards"]
    # ... the us repository's copies stay, and so do the other eu repository's.
    assert keeper_xorbs <= us["xorbs"] and keeper_shards <= us["shards"]
    assert kept_xorbs <= eu["xorbs"] and kept_shards <= eu["shards"]
    for repo_id, content in ((keeper, data), (kept_eu, other)):
        mark = log_mark(server)
        got = run_python(server, token, tmp_path / f"dl-{random.Random(repo_id).random()}", f"""
from huggingface_hub import hf_hub_download
p = hf_hub_download({repo_id!r}, "w.safetensors", local_dir={str(tmp_path / repo_id.replace('/', '_'))!r})
print(json.dumps(hashlib.sha256(open(p, "rb").read()).hexdigest()))
""")
        assert got == hashlib.sha256(content).hexdigest()
        assert reconstructions_since(server, mark) >= 1
