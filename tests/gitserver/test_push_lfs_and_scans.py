"""Pushed content meets the same checks as API commits: LFS pointers must match the stored
object exactly, and every pushed file (even one only in an intermediate commit) is scanned."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import BastionServer, hf_api, wait_for
from tests.gitserver.conftest import Git, RepoHandle


def _pointer(oid: str, size: int) -> str:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def test_push_of_lfs_pointer_with_wrong_size_is_rejected(server: BastionServer, repo: RepoHandle, git: Git,
                                                         tmp_path: Path) -> None:
    api = hf_api(server, repo.token)
    data = os.urandom(1000)
    oid = hashlib.sha256(data).hexdigest()
    api.upload_file(path_or_fileobj=data, path_in_repo="weights.bin", repo_id=repo.repo_id)  # stored, linked
    head = api.model_info(repo.repo_id).sha
    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))

    # A hand-written pointer naming the stored object with the wrong size; --no-verify keeps
    # git-lfs's pre-push hook out of it, so only the server can catch it.
    (work / "copy.txt").write_text(_pointer(oid, 999))
    git.commit_all(work, "pointer with a wrong size")
    assert git("cat-file", "-p", "HEAD:copy.txt", cwd=work).stdout == _pointer(oid, 999)
    proc = git("push", "--no-verify", "origin", "main", cwd=work, check=False)
    assert proc.returncode != 0
    assert "[remote rejected] main -> main" in proc.stderr, proc.stderr
    assert "remote: Bastion rejected this push:" in proc.stderr
    assert f"remote:   - 'copy.txt': the LFS pointer says 999 bytes but object {oid} has 1000 bytes" in proc.stderr
    assert api.model_info(repo.repo_id).sha == head
    assert git("ls-remote", "origin", "refs/heads/main", cwd=work).stdout.split()[0] == head

    # The same pointer with the right size is accepted (the rejection was about the size).
    git("reset", "-q", "--hard", "origin/main", cwd=work)
    (work / "copy.txt").write_text(_pointer(oid, 1000))
    pushed = git.commit_all(work, "pointer with the right size")
    git("push", "--no-verify", "origin", "main", cwd=work)
    assert api.model_info(repo.repo_id).sha == pushed
    copy = next(iter(api.get_paths_info(repo.repo_id, ["copy.txt"])))
    assert copy.lfs is not None and copy.lfs.sha256 == oid and copy.size == 1000


def _evil_pickle(tag: str) -> bytes:
    """os.system(<unique command>) as a protocol-2 pickle: inert bytes, unique so never scanned before."""
    cmd = f"echo {tag}".encode()
    return b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"q\x01\x85q\x02Rq\x03."


def test_pushed_files_get_scan_verdicts_even_in_an_intermediate_commit(server: BastionServer, repo: RepoHandle,
                                                                        git: Git, tmp_path: Path) -> None:
    api = hf_api(server, repo.token)
    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))
    tag = os.urandom(8).hex()
    (work / "payload.dat").write_bytes(_evil_pickle(tag))  # .dat is not LFS-tracked: a regular git blob
    middle = git.commit_all(work, "add payload")
    (work / "payload.dat").unlink()
    (work / "README.md").write_text(f"# clean {tag}\n")
    last = git.commit_all(work, "replace payload with a readme")
    git("push", "-q", "origin", "main", cwd=work)
    assert api.model_info(repo.repo_id).sha == last
    payload_blob = git("rev-parse", f"{middle}:payload.dat", cwd=work).stdout.strip()
    readme_blob = git("rev-parse", f"{last}:README.md", cwd=work).stdout.strip()

    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        jobs = conn.execute(sa.text(
            "SELECT s.blob_key, s.scanner, s.path FROM scan_jobs s JOIN repos r ON r.id = s.repo_id "
            "WHERE r.namespace = :ns"), {"ns": repo.owner}).all()
    engine.dispose()
    by_blob: dict[str, set[str]] = {}
    for blob_key, scanner, path in jobs:
        by_blob.setdefault(blob_key, set()).add(scanner)
        assert path in (".gitattributes", "payload.dat", "README.md")
    assert by_blob[payload_blob] == by_blob[readme_blob] == {"av", "pickle", "format", "secrets"}

    def status(revision: str, path: str):  # type: ignore[no-untyped-def]
        tree = {e.path: e for e in api.list_repo_tree(repo.repo_id, revision=revision, expand=True)}
        sec = tree[path].security
        return sec if sec is not None and sec.status not in ("unscanned", "queued") else None

    payload = wait_for(lambda: status(middle, "payload.dat"))
    assert payload.status == "unsafe" and payload.safe is False
    assert payload.pickle_import_scan["status"] == "unsafe"
    assert {"module": "os", "name": "system"} in [{k: i[k] for k in ("module", "name")}
                                                  for i in payload.pickle_import_scan["imports"]]
    readme = wait_for(lambda: status("main", "README.md"))
    assert readme.status == "safe" and readme.safe is True  # clamd runs for the session server
    infos = api.get_paths_info(repo.repo_id, ["payload.dat"], revision=middle, expand=True)
    assert infos[0].security.status == "unsafe"
    # Only the tip's files count for the repository's status: the payload is gone from main.
    assert "payload.dat" not in [f["path"] for f in api.model_info(repo.repo_id, securityStatus=True)
                                 .security_repo_status["filesWithIssues"]]
