"""The revision security summary is cached (per commit, reader's view, scanner versions and verdict
generation), and never stale: a verdict, job or notice written by any process shows on the next page."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd

import bastion.scanning.enqueue  # noqa: F401  (registers the post-commit hook)
from bastion.accounts import service as accounts
from bastion.config import Settings
from bastion.db import transaction
from bastion.hub import Hub
from bastion.repos import commit, service
from bastion.scanning import adapters, generation, notices, verdicts
from bastion.scanning.models import ScanJob, ScanResultRow, SecretNotice
from bastion.scanning.results import ScanResult, Verdict
from tests.conftest import BastionServer, hf_api, wait_for
from tests.scanning.test_pipeline import MALICIOUS_PICKLE
from tests.scanning.test_secret_pipeline import github_token

HTML = {"accept": "text/html"}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub.open(Settings(data_dir=tmp_path, clamd_address=f"unix://{tmp_path}/none.sock", scanners=["pickle"]))
    yield h
    h.close()


def _generation(hub: Hub) -> int:
    with transaction(hub.sessions, readonly=True) as s:
        value = generation.current(s)
    assert value is not None
    return value


def test_every_kind_of_verdict_write_bumps_the_generation(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "gen", "gen@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "gen"), "m", "model", False)
    start = _generation(hub)
    with transaction(hub.sessions, readonly=True) as s:  # reading bumps nothing
        verdicts.revision_summary(hub, s, repo, hub.git(repo.storage_key).resolve("main"))
    assert _generation(hub) == start
    with transaction(hub.sessions) as s:  # a commit queues jobs with one INSERT statement (enqueue_blobs)
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", [commit.AddFile("a.txt", b"a")], "a")
    after_commit = _generation(hub)
    assert after_commit > start
    with transaction(hub.sessions) as s:  # a job's state (ORM flush)
        job = s.scalars(sa.select(ScanJob).where(ScanJob.path == "a.txt")).one()
        job.state = "done"
    assert _generation(hub) > after_commit
    before = _generation(hub)
    with transaction(hub.sessions) as s:  # a verdict, then a SAVEPOINT rolled back: the verdict still counts
        verdicts.store_result(s, job.blob_key, "pickle", ScanResult("pickle", adapters.PICKLE_VERSION,
                                                                     Verdict.UNSAFE, "test"))
        s.flush()
        try:
            with s.begin_nested():
                s.add(ScanResultRow(blob_key=job.blob_key, scanner="pickle", scanner_version=adapters.PICKLE_VERSION,
                                    verdict="safe", summary="", details={}))
        except sa.exc.IntegrityError:
            pass
    assert _generation(hub) > before
    before = _generation(hub)
    with transaction(hub.sessions) as s:  # a secret notice's decision
        s.add(SecretNotice(repo_id=repo.id, fingerprint="f" * 40, provider="p", secret_type="t", detector="d",
                           verification="none", first_path="a.txt", first_line=1, first_blob=job.blob_key))
    with transaction(hub.sessions) as s:
        notices.set_notice_state(s, s.get(type(repo), repo.id), None, "f" * 40, "dismissed", "test")
    assert _generation(hub) >= before + 2
    before = _generation(hub)
    with pytest.raises(RuntimeError), transaction(hub.sessions) as s:  # rolled back: no bump
        s.scalars(sa.select(ScanJob)).first().state = "queued"  # type: ignore[union-attr]
        s.flush()
        raise RuntimeError("abort")
    assert _generation(hub) == before


def test_the_next_summary_shows_a_changed_verdict(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "next", "next@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "next"), "m", "model", False)
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main",
                             [commit.AddFile("w.pkl", b"weights"), commit.AddFile("r.md", b"readme")], "two")
    head = hub.git(repo.storage_key).resolve("main")

    def summary() -> dict[str, object]:
        with transaction(hub.sessions, readonly=True) as s:
            return verdicts.revision_summary(hub, s, repo, head)

    assert summary() == summary() == {"scansDone": False, "filesWithIssues": [], "filesWithIssuesCount": 0,
                                      "commit": str(head.id)}
    key = dict(verdicts.revision_files(hub, repo, head))["w.pkl"]
    with transaction(hub.sessions) as s:
        verdicts.store_result(s, key, "pickle", ScanResult("pickle", adapters.PICKLE_VERSION, Verdict.UNSAFE, "x"))
    assert summary()["filesWithIssues"] == [{"path": "w.pkl", "level": "unsafe"}]
    with transaction(hub.sessions) as s:
        verdicts.store_result(s, key, "pickle", ScanResult("pickle", adapters.PICKLE_VERSION, Verdict.SAFE, "ok"))
    assert summary()["filesWithIssues"] == []


def test_a_worker_and_a_second_server_never_see_a_stale_summary(tmp_path: Path) -> None:
    """Two `bastion serve` processes and a `bastion worker` on one database: each server has cached the
    summary before the worker writes verdicts, and a dismissal through one server shows on the other at once."""
    env = {"BASTION_SCANNERS": '["pickle", "secrets"]', "BASTION_EMBEDDED_WORKERS": "0"}
    first = BastionServer(tmp_path / "data", env=env).start()
    second = BastionServer(tmp_path / "data", env=env)
    worker = None
    try:
        second.start()
        name, token = first.create_user()
        auth = {"authorization": f"Bearer {token}"}
        repo_id = f"{name}/cached"
        hf_api(first, token).create_repo(repo_id)
        hf_api(first, token).create_commit(repo_id, commit_message="files", operations=[
            CommitOperationAdd("README.md", b"# hello\n"), CommitOperationAdd("model.pkl", MALICIOUS_PICKLE),
            CommitOperationAdd("notebook.py", f"client = Github('{github_token('c4ch')}')\n".encode())])

        def scan(server: BastionServer) -> dict[str, object]:
            got = httpx.get(f"{server.url}/api/models/{repo_id}/scan", headers=auth, timeout=60)
            assert got.status_code == 200
            return got.json()  # type: ignore[no-any-return]

        for server in (first, second):  # both cache the unscanned summary
            for _ in range(2):
                assert scan(server)["filesWithIssues"] == [] and scan(server)["scansDone"] is False
                assert 'id="security-warning"' not in httpx.get(f"{server.url}/{repo_id}", headers=HTML).text
        worker = subprocess.Popen([sys.executable, "-m", "bastion.cli", "worker", "--workers", "1"],
                                  env=first.env, stdout=(tmp_path / "worker.log").open("wb"), stderr=subprocess.STDOUT)
        for server in (first, second):
            done = wait_for(lambda s=server: scan(s)["scansDone"] and scan(s), timeout=180, interval=0.5)
            assert [f["path"] for f in done["filesWithIssues"]] == ["model.pkl", "notebook.py"]
            assert done["filesWithIssuesCount"] == 2
            assert 'id="security-warning"' in httpx.get(f"{server.url}/{repo_id}", headers=HTML).text
            info = hf_api(server, token).model_info(repo_id, securityStatus=True).security_repo_status
            assert [f["path"] for f in info["filesWithIssues"]] == ["model.pkl", "notebook.py"]
        notice = httpx.get(f"{first.url}/api/models/{repo_id}/secrets", headers=auth).json()[0]
        assert httpx.post(f"{first.url}/api/models/{repo_id}/secrets/state", headers=auth, json={
            "fingerprint": notice["fingerprint"], "state": "dismissed", "reason": "test"}).status_code == 200
        # No waiting: the dismissal is committed, so the other server's next answer must show it.
        assert scan(second)["filesWithIssues"] == [{"path": "model.pkl", "level": "unsafe"}]
        assert scan(first)["filesWithIssues"] == [{"path": "model.pkl", "level": "unsafe"}]
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        second.stop()
        first.stop()
