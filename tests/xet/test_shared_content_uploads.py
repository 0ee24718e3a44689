"""Issue 17: shared content uploaded with hf_xet by several clients at once, and into repos that reuse a
deleted repo's id, never meets a refused shard (`400` on `POST /xet-cas/…/v1/shards`).

The refused shard, found with the server's new log line ("xet shard refused … references xorb …, which
does not exist"): hf_xet keys its session and local shard cache by CAS URL. The URL named only the repo
id, and SQLite gives a new repo the id of the newest one after it is deleted, so a client that uploaded
content to a deleted repo took the new repo's URL for the old one and sent a shard referencing xorbs the
new repo never received. Bastion rightly refuses those (a repo's shards may reference only xorbs that repo
holds, invariant 7; the Xet spec only asks that they exist). The URL now names the repo's incarnation too.
"""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

from tests.conftest import BastionServer
from tests.xet.hfclient import log_mark, run_python

SEED = 1717
SHARED_FILES = 6


def _uploader(owner: str, shared_repo: str, seed: int, rounds: int) -> str:
    """Client code: seeded files (the same for every client), uploaded to the shared repo under its own
    folder and, `rounds` times, to a repo of its own that it deletes and creates again."""
    return f"""
import random, tempfile, pathlib, httpx
from huggingface_hub import HfApi
api = HfApi()
rng = random.Random({SEED})
folder = pathlib.Path(tempfile.mkdtemp())
for i in range({SHARED_FILES}):
    (folder / f"part-{{i}}.bin").write_bytes(rng.randbytes(20_000 + 7_000 * i))
(folder / ".git").mkdir()
(folder / ".git" / "config").write_text("not uploaded")
(folder / "README.md").write_text("")
urls = []
api.upload_folder(folder_path=folder, repo_id="{shared_repo}", path_in_repo="client-{seed}")
for r in range({rounds}):
    rid = api.create_repo("{owner}/own-{seed}", exist_ok=False).repo_id
    urls.append(httpx.get(api.endpoint + f"/api/models/{{rid}}/xet-write-token/main",
                          headers=api._build_hf_headers()).json()["casUrl"])
    api.upload_folder(folder_path=folder, repo_id=rid)
    assert sorted(api.list_repo_files(rid)) == [".gitattributes", "README.md"] + [
        f"part-{{i}}.bin" for i in range({SHARED_FILES})]
    api.delete_repo(rid)
print(json.dumps(urls))
"""


def test_reused_repo_id_gets_its_own_cas_url(server: BastionServer, user: tuple[str, str], tmp_path: Path) -> None:
    """One client, one cache: create, upload, delete, create again (the same id on SQLite)."""
    owner, token = user
    mark = log_mark(server)  # the session's server: other tests send bad shards on purpose
    shared = f"{owner}/shared-{random.Random(SEED).getrandbits(32):08x}"
    run_python(server, token, tmp_path / "home", f"from huggingface_hub import HfApi\nHfApi().create_repo('{shared}')"
               "\nprint(json.dumps(1))")
    urls = run_python(server, token, tmp_path / "home", _uploader(owner, shared, 1, 3))
    assert len(set(urls)) == 3  # a new URL for each incarnation ...
    ids = [url.rsplit("/r", 1)[1].partition("-")[0] for url in urls]
    assert len(set(ids)) == 1  # ... though SQLite gave each the same id
    assert "xet shard refused" not in server.server_log()[mark:]


def test_several_clients_upload_shared_content_at_once(server: BastionServer, user: tuple[str, str],
                                                       tmp_path: Path) -> None:
    """Three client processes share one HF_HOME (one Xet cache) and upload the same seeded files at the
    same time: into one shared repo and into repos of their own, deleted and created again."""
    owner, token = user
    mark = log_mark(server)
    shared = f"{owner}/shared-at-once"
    run_python(server, token, tmp_path / "home", f"from huggingface_hub import HfApi\nHfApi().create_repo('{shared}')"
               "\nprint(json.dumps(1))")
    results: dict[int, object] = {}

    def client(seed: int) -> None:
        try:
            results[seed] = run_python(server, token, tmp_path / "home", _uploader(owner, shared, seed, 2))
        except BaseException as exc:  # reported below, with the server's log
            results[seed] = exc

    threads = [threading.Thread(target=client, args=(seed,)) for seed in (11, 12, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    failures = {seed: r for seed, r in results.items() if isinstance(r, BaseException)}
    assert not failures and len(results) == 3, failures
    assert "xet shard refused" not in server.server_log()[mark:]
    # Every client's copy of the shared files is whole, and .git stayed home.
    got = run_python(server, token, tmp_path / "home-dl", f"""
from huggingface_hub import HfApi, hf_hub_download
import hashlib
api = HfApi()
files = sorted(api.list_repo_files("{shared}"))
digests = {{f: hashlib.sha256(open(hf_hub_download("{shared}", f), "rb").read()).hexdigest()
            for f in files if f.endswith(".bin")}}
print(json.dumps({{"files": files, "digests": digests}}))
""")
    rng = random.Random(SEED)
    expected = [hashlib.sha256(rng.randbytes(20_000 + 7_000 * i)).hexdigest() for i in range(SHARED_FILES)]
    for seed in (11, 12, 13):
        assert [got["digests"][f"client-{seed}/part-{i}.bin"] for i in range(SHARED_FILES)] == expected
    assert not any(".git/" in f for f in got["files"])
