"""A scan job's life in few transactions: claim (with every lookup the scan needs), then the verdict and
all its follow-ups (result, audit, notices, mail, token revocation, the job's completion) in one.

Counted with a SQLAlchemy "begin" listener on the hub's real SQLite engine, in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

import bastion.scanning.enqueue  # noqa: F401  (registers the post-commit hook)
from bastion.accounts import service as accounts
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.hub import Hub
from bastion.lfs.service import link_object
from bastion.repos import commit, service
from bastion.scanning import jobs
from bastion.scanning.models import ScanJob, ScanResultRow, SecretNotice
from bastion.tokens import service as tokens


def _hub(tmp_path: Path, scanners: list[str]) -> Hub:
    return Hub.open(Settings(data_dir=tmp_path, clamd_address=f"unix://{tmp_path}/none.sock", scanners=scanners))


@contextmanager
def _begins(hub: Hub) -> Iterator[list[bool]]:
    """Every BEGIN on the hub's engine while the block runs: True for a writing transaction."""
    seen: list[bool] = []

    def on_begin(conn: sa.Connection) -> None:
        seen.append(not conn.get_execution_options().get("bastion_readonly"))

    sa.event.listen(hub.engine, "begin", on_begin)
    try:
        yield seen
    finally:
        sa.event.remove(hub.engine, "begin", on_begin)


def _pending(hub: Hub) -> dict[str, int]:
    with transaction(hub.sessions) as s:
        return {path: job_id for job_id, path in s.execute(sa.select(ScanJob.id, ScanJob.path)
                                                            .where(ScanJob.state != "done"))}


@pytest.fixture
def pickle_hub(tmp_path: Path) -> Iterator[Hub]:
    h = _hub(tmp_path, ["pickle"])
    yield h
    h.close()


@pytest.fixture
def secrets_hub(tmp_path: Path) -> Iterator[Hub]:
    h = _hub(tmp_path, ["secrets"])
    yield h
    h.close()


def test_a_job_on_an_lfs_object_claims_and_records_in_two_transactions(pickle_hub: Hub) -> None:
    hub = pickle_hub
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "tess", "tess@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "tess"), "m", "model", False)
    data = b"\x80\x04K\x01."  # a harmless pickle, stored with LFS
    oid = hub.blobs.put_bytes(data)
    with transaction(hub.sessions) as s:
        link_object(s, repo.id, oid, len(data))
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main",
                             [commit.AddLfsFile("w.pkl", oid, len(data))], "add")
    job_id = _pending(hub)["w.pkl"]
    with _begins(hub) as begins:
        assert jobs.run_job(hub, job_id) == "safe"
    # Claim (the lease, the repository, where the object is stored), then the verdict: nothing else.
    assert begins == [True, True]
    with transaction(hub.sessions) as s:
        assert s.scalar(sa.select(ScanResultRow.verdict).where(ScanResultRow.blob_key == oid)) == "safe"
        assert s.get(ScanJob, job_id).state == "done"


def test_a_live_token_found_is_revoked_in_the_transaction_that_records_the_verdict(secrets_hub: Hub) -> None:
    hub = secrets_hub
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "vera", "vera@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "vera"), "m", "model", False)
        issued = tokens.create_token(s, user, "ci", role="write")
    with transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main",
                             [commit.AddFile("config.py", f"TOKEN = '{issued.secret}'\n".encode())], "add")
    job_id = _pending(hub)["config.py"]
    with _begins(hub) as begins:
        assert jobs.run_job(hub, job_id) == "unsafe"
    # Two writing transactions (claim; verdict, notice, mail, revocation, completion); the verifier's
    # lookup of the token is read-only.
    assert begins.count(True) == 2 and len(begins) <= 3, begins
    with transaction(hub.sessions) as s:
        assert not tokens.is_live(s.get(type(issued.token), issued.token.id))
        notice = s.scalar(sa.select(SecretNotice).where(SecretNotice.repo_id == repo.id))
        assert notice is not None and notice.first_path == "config.py"
        assert s.get(ScanJob, job_id).state == "done"


def test_jobs_waiting_for_an_unavailable_scanner_are_due_when_it_answers_again(tmp_path: Path) -> None:
    """clamd down: the job keeps an `unavailable` verdict and a back-off; once clamd answers, the sweeper's
    wake_waiting makes it due at once (the next sweep hands it out), and touches nothing else."""
    hub = _hub(tmp_path, ["av", "pickle"])  # clamd at a socket nobody listens on
    try:
        with transaction(hub.sessions) as s:
            user = accounts.create_user(s, "wade", "wade@example.com")
            repo = service.create_repo(hub, s, user, service.namespace_ref(s, "wade"), "m", "model", False)
            commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main",
                                 [commit.AddFile("w.pkl", b"\x80\x04K\x01.")], "add")
        with transaction(hub.sessions) as s:
            ids = dict(s.execute(sa.select(ScanJob.scanner, ScanJob.id)).all())
        assert jobs.run_job(hub, ids["av"]) == "unavailable"
        assert jobs.run_job(hub, ids["pickle"]) == "safe"
        with transaction(hub.sessions) as s:
            waiting = s.get(ScanJob, ids["av"])
            assert waiting.state == "queued" and waiting.lease_until > utcnow()
        assert jobs.sweep(hub) == []  # still backing off
        assert jobs.wake_waiting(hub, ["pickle"]) == 0  # another scanner answering wakes nothing
        assert jobs.wake_waiting(hub, ["av"]) == 1
        assert jobs.sweep(hub) == [ids["av"]]
        with transaction(hub.sessions) as s:
            assert s.get(ScanJob, ids["pickle"]).state == "done"
    finally:
        hub.close()
