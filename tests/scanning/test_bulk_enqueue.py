"""A commit of many files is queued in batches: one job per new blob and scanner, every job handed to a
worker, none for content already judged, and a batched message runs each of its jobs."""

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
from bastion.scanning import adapters
from bastion.scanning import queue as scan_queue
from bastion.scanning.models import ScanJob, ScanResultRow


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub.open(Settings(data_dir=tmp_path, clamd_address=f"unix://{tmp_path}/none.sock", scanners=["pickle"]))
    yield h
    h.close()


def _queued_ids(queue: scan_queue.ScanQueue) -> tuple[int, list[int]]:
    """(messages, job ids they carry) in the queue's storage."""
    messages, ids = 0, []
    for task in queue.huey.pending():
        messages += 1
        ids += list(task.args[0]) if task.name.endswith("scan_jobs") else [task.args[0]]
    return messages, ids


def test_a_large_commit_queues_each_new_blob_once_in_few_messages(hub: Hub) -> None:
    queue = scan_queue.attach(hub)
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "bulk", "bulk@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "bulk"), "m", "model", False)
    queue.huey.flush()  # the repo's first commit
    with transaction(hub.sessions) as s:
        judged = adapters.blob_ref(hub, repo.storage_key, str(hub.git(repo.storage_key).repo.create_blob(b"old\n")))
        s.add(ScanResultRow(blob_key=judged.key, scanner="pickle", scanner_version=adapters.PICKLE_VERSION,
                            verdict="safe", summary="", details={}))
    files = scan_queue.MAX_MESSAGES * 3 + 7
    # Every tenth file repeats an earlier one's content; one file holds content judged before.
    adds = [commit.AddFile(f"data/f{i:04d}.txt", f"file {i - i % 10 if i % 10 == 9 else i}\n".encode())
            for i in range(files)] + [commit.AddFile("data/old.txt", b"old\n")]
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", adds, "many")
    unique = {f"file {i - i % 10 if i % 10 == 9 else i}\n" for i in range(files)}
    with transaction(hub.sessions) as s:
        jobs = s.execute(sa.select(ScanJob.id, ScanJob.blob_key, ScanJob.path)
                         .where(ScanJob.state == "queued", ScanJob.path.like("data/%"))).all()
    assert len(jobs) == len(unique)  # one per distinct content; none for what was judged already
    assert judged.key not in {key for _, key, _ in jobs}
    assert all(path.startswith("data/f") and not path.endswith("9.txt") for _, _, path in jobs)  # its first path
    messages, ids = _queued_ids(queue)
    assert messages <= scan_queue.MAX_MESSAGES
    assert sorted(ids) == sorted(job_id for job_id, _, _ in jobs)  # every job handed over exactly once


def test_a_batched_message_runs_each_of_its_jobs(hub: Hub) -> None:
    queue = scan_queue.attach(hub)
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "batch", "batch@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "batch"), "m", "model", False)
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main",
                             [commit.AddFile(f"f{i}.txt", f"{i}\n".encode()) for i in range(3)], "three")
    with transaction(hub.sessions) as s:
        ids = list(s.scalars(sa.select(ScanJob.id).where(ScanJob.state != "done")))
    assert len(ids) >= 3
    queue.batch_task.call_local(ids)
    with transaction(hub.sessions) as s:
        states = set(s.scalars(sa.select(ScanJob.state)))
        verdicts = set(s.scalars(sa.select(ScanResultRow.verdict)))
    assert states == {"done"} and verdicts == {"safe"}
