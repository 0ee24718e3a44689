"""Rescans: a new scanner or signature version queues a new scan and keeps the old verdict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.accounts import service as accounts
from bastion.config import Settings
from bastion.db import transaction
from bastion.hub import Hub
from bastion.repos import commit, service
from bastion.scanning import adapters, enqueue, jobs, verdicts
from bastion.scanning.models import ScanJob, ScanResultRow


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub.open(Settings(data_dir=tmp_path, clamd_address=f"unix://{tmp_path}/none.sock", scanners=["pickle"]))
    yield h
    h.close()


def _run_all(hub: Hub) -> list[str]:
    with transaction(hub.sessions) as s:
        ids = list(s.scalars(sa.select(ScanJob.id).where(ScanJob.state != "done")))
    return [jobs.run_job(hub, i) for i in ids]


def test_version_change_queues_rescan_and_keeps_history(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "ruth", "ruth@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "ruth"), "m", "model", False)
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", [commit.AddFile("a.txt", b"hello")], "a")
    assert set(_run_all(hub)) == {"safe"}
    with transaction(hub.sessions) as s:
        before = s.execute(sa.select(ScanResultRow.blob_key, ScanResultRow.scanner_version)).all()
    assert before and {v for _, v in before} == {adapters.PICKLE_VERSION}

    # Nothing is outdated while the version is unchanged.
    assert enqueue.rescan_outdated(hub) == 0
    monkeypatch.setattr(adapters.PickleScannerAdapter, "version", lambda self: "99.0.0-test")
    queued = enqueue.rescan_outdated(hub)
    assert queued == len(before)  # .gitattributes and a.txt
    assert set(_run_all(hub)) == {"safe"}
    with transaction(hub.sessions) as s:
        after = s.execute(sa.select(ScanResultRow.blob_key, ScanResultRow.scanner_version)).all()
        status = verdicts.file_status(hub, s, before[0][0])
    assert set(after) == set(before) | {(k, "99.0.0-test") for k, _ in before}  # history kept
    assert status["pickleImportScan"]["version"] == "99.0.0-test"
    assert enqueue.rescan_outdated(hub) == 0


def test_a_scanner_enabled_later_scans_what_the_others_scanned(tmp_path: Path) -> None:
    """An instance upgraded to a new scanner (the format scanner): the sweeper queues it for every blob
    the other scanners judged, so no old file stays unscanned."""
    before = Hub.open(Settings(data_dir=tmp_path, clamd_address=f"unix://{tmp_path}/none.sock", scanners=["pickle"]))
    try:
        with transaction(before.sessions) as s:
            user = accounts.create_user(s, "uma", "uma@example.com")
            repo = service.create_repo(before, s, user, service.namespace_ref(s, "uma"), "m", "model", False)
        with transaction(before.sessions) as s:
            commit.create_commit(before, s, s.get(type(repo), repo.id), user, "main",
                                 [commit.AddFile("a.npy", b"\x93NUMPY\x01\x00\x02\x00{}")], "a")
        assert len(_run_all(before)) == 2
    finally:
        before.close()
    after = Hub.open(Settings(data_dir=tmp_path, clamd_address=f"unix://{tmp_path}/none.sock",
                              scanners=["pickle", "format"]))
    try:
        with transaction(after.sessions) as s:
            keys = set(s.scalars(sa.select(ScanResultRow.blob_key)))
            assert {verdicts.file_status(after, s, k)["formatScan"]["status"] for k in keys} == {"unscanned"}
        assert enqueue.rescan_outdated(after) == len(keys)  # .gitattributes and a.npy, for the format scanner
        assert enqueue.rescan_outdated(after) == 0  # queued once
        _run_all(after)
        with transaction(after.sessions) as s:
            statuses = {k: verdicts.file_status(after, s, k) for k in keys}
        formats = sorted(str(st["formatScan"]["format"]) for st in statuses.values())
        assert formats == ["None", "npy"]
        npy = next(st for st in statuses.values() if st["formatScan"]["format"] == "npy")
        assert npy["formatScan"]["status"] == "suspicious" and npy["status"] == "suspicious"
        assert enqueue.rescan_outdated(after) == 0
    finally:
        after.close()


def test_scanner_crash_becomes_retry_then_error_never_safe(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "sam", "sam@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "sam"), "m", "model", False)
    _run_all(hub)

    def boom(self: object, *args: object) -> None:
        raise RuntimeError("scanner bug")

    # The pipeline runs the pickle scanner in a scan process (scan_isolated), other paths in-process.
    monkeypatch.setattr(adapters.PickleScannerAdapter, "scan_bytes", boom)
    monkeypatch.setattr(adapters.PickleScannerAdapter, "scan_isolated", boom)
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", [commit.AddFile("b.txt", b"b")], "b")
    with transaction(hub.sessions) as s:
        (job_id,) = s.scalars(sa.select(ScanJob.id).where(ScanJob.state != "done"))
    outcomes = []
    for _ in range(hub.settings.scan_max_attempts):
        with transaction(hub.sessions) as s:  # skip the backoff wait: the lease is the retry timer
            s.get(ScanJob, job_id).lease_until = None
        outcomes.append(jobs.run_job(hub, job_id))
    assert outcomes == ["retry", "retry", "error"]
    with transaction(hub.sessions) as s:
        key = s.get(ScanJob, job_id).blob_key
        status = verdicts.file_status(hub, s, key)
    assert status["status"] == "error" and "scanner bug" in status["pickleImportScan"]["summary"]


def test_job_for_a_deleted_repo_is_dropped_and_the_content_can_be_queued_again(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "tess", "tess@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "tess"), "m", "model", False)
    _run_all(hub)
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", [commit.AddFile("g.txt", b"gone")], "g")
    with transaction(hub.sessions) as s:
        service.delete_repo(hub, s, s.get(type(repo), repo.id))
    assert _run_all(hub) == ["gone"]  # no traceback, no verdict invented for bytes nobody can read
    with transaction(hub.sessions) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ScanJob).where(ScanJob.state != "done")) == 0
        again = service.create_repo(hub, s, user, service.namespace_ref(s, "tess"), "m2", "model", False)
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(again), again.id), user, "main", [commit.AddFile("g.txt", b"gone")],
                             "g")
    assert _run_all(hub) == ["safe"]


def test_job_for_an_lfs_object_collected_before_its_scan_is_dropped(hub: Hub) -> None:
    """Storage GC may free a file that was committed and removed again before its scan ran: the job is
    dropped without a verdict, so the same bytes uploaded later are scanned, not marked as an error."""
    from datetime import timedelta

    from bastion.lfs.service import link_object
    from bastion.objects import gc

    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "uma", "uma@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "uma"), "m", "model", False)
    _run_all(hub)
    data = b"\x80\x04K\x01."  # a harmless pickle, stored with LFS
    oid = hub.blobs.put_bytes(data)
    with transaction(hub.sessions) as s:
        link_object(s, repo.id, oid, len(data))
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main",
                             [commit.AddLfsFile("w.pkl", oid, len(data))], "add")
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", [commit.DeleteFile("w.pkl")], "rm")
    with transaction(hub.sessions) as s:
        commit.squash_history(hub, s, s.get(type(repo), repo.id), user, "main", "squash")
    result = gc.collect_garbage(hub, timedelta(0))
    assert result.objects_removed == 1 and not hub.blobs.exists(oid)
    assert _run_all(hub) == ["gone"]
    again = hub.blobs.put_bytes(data)
    with transaction(hub.sessions) as s:
        link_object(s, repo.id, again, len(data))
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main",
                             [commit.AddLfsFile("w.pkl", again, len(data))], "again")
    assert _run_all(hub) == ["safe"]
