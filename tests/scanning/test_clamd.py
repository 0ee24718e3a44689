"""ClamAV in production shape: signature updates while Bastion runs, and files over clamd's limits."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.scanning.results import Verdict
from bastion.scanning.scanners.malware import CLAMAV_MAX_FILE, OVERLAP, MalwareScanner, windows
from tests.conftest import CUSTOM_MALWARE_MARKER, BastionServer, ClamdServer, hf_api, wait_for

MiB = 1024 * 1024


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def _security(server: BastionServer, token: str, repo_id: str) -> dict[str, object]:
    return {e.path: e.security for e in hf_api(server, token).list_repo_tree(repo_id, recursive=True, expand=True)
            if getattr(e, "security", None) is not None}


@pytest.fixture
def updatable_clamd(tmp_path: Path) -> Iterator[ClamdServer]:
    server = ClamdServer(tmp_path / "clamd").start()
    yield server
    server.stop()


def test_signature_update_while_running_rescans_without_restart(tmp_path: Path,
                                                                 updatable_clamd: ClamdServer) -> None:
    """freshclam updates clamd under a running server: every file gets a verdict from the new
    signatures on its own (no restart, no admin rescan), old verdicts are kept, nothing runs twice."""
    clamd = updatable_clamd
    v1 = clamd.publish_daily(1, {"Bastion.Test.DailyOne": b"BASTION-DAILY-ONE"})
    server = BastionServer(tmp_path / "data", env={"BASTION_CLAMD_ADDRESS": clamd.address,
                                                   "BASTION_SCAN_LEASE_SECONDS": "3"}).start()
    try:
        name, token = server.create_user()
        api = hf_api(server, token)
        repo_id = f"{name}/updated"
        api.create_repo(repo_id)
        seeded = random.Random(7)
        notes = b"plain notes " + seeded.randbytes(16).hex().encode()
        payload = b"\x00\x01 BASTION-DAILY-TWO " + seeded.randbytes(32)  # only the next signature release knows it
        api.upload_file(path_or_fileobj=notes, path_in_repo="notes.txt", repo_id=repo_id)
        api.upload_file(path_or_fileobj=payload, path_in_repo="payload.bin", repo_id=repo_id)

        def scanned_with(version: str) -> dict[str, object] | None:
            """Every file judged by every scanner, ClamAV with the signatures of `version` (the other
            scanners run in scan processes of their own and may finish after it)."""
            sec = _security(server, token, repo_id)
            done = all(s.av_scan and s.av_scan.get("version") == version and s.status not in ("queued", "unscanned")
                       for s in sec.values())
            return sec if done else None

        sec = wait_for(lambda: scanned_with(v1))
        assert sec["notes.txt"].status == "safe" and sec["payload.bin"].status == "safe"

        v2 = clamd.publish_daily(2, {"Bastion.Test.DailyTwo": b"BASTION-DAILY-TWO"})
        assert v2 != v1
        sec = wait_for(lambda: scanned_with(v2))
        assert sec["notes.txt"].status == "safe" and sec["notes.txt"].av_scan["virusFound"] is False
        assert sec["payload.bin"].status == "unsafe"
        assert sec["payload.bin"].av_scan["virusNames"] == ["Bastion.Test.DailyTwo.UNOFFICIAL"]

        engine = _db(server)
        with engine.connect() as conn:
            results = conn.execute(sa.text("SELECT blob_key, scanner_version, verdict FROM scan_results "
                                           "WHERE scanner = 'av'")).all()
            jobs = conn.execute(sa.text("SELECT blob_key, scanner_version, state, attempts FROM scan_jobs "
                                        "WHERE scanner = 'av'")).all()
        keys = {r.blob_key for r in results}
        assert {(k, v) for k, v, _ in results} == {(k, v) for k in keys for v in (v1, v2)}  # history kept
        assert [r.verdict for r in results if r.scanner_version == v2].count("unsafe") == 1
        # One job per blob and version, each run once: no duplicate or conflicting work.
        assert sorted((j.blob_key, j.scanner_version) for j in jobs) == sorted((k, v) for k in keys for v in (v1, v2))
        assert {(j.state, j.attempts) for j in jobs} == {("done", 1)}

        # Versions unchanged: later sweeper passes (one a second here) queue nothing more.
        time.sleep(4)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM scan_jobs WHERE scanner = 'av'")).scalar() == len(jobs)
        engine.dispose()
    finally:
        server.stop()


@pytest.fixture
def small_clamd(tmp_path: Path) -> Iterator[ClamdServer]:
    """Like a stock clamd, only smaller: streams over 2M are refused, files over 1M not scanned whole."""
    server = ClamdServer(tmp_path / "small-clamd", max_size="1M", stream_max_length="2M").start()
    yield server
    server.stop()


def test_file_over_stream_max_length_is_error_at_once_never_safe(tmp_path: Path, small_clamd: ClamdServer) -> None:
    server = BastionServer(tmp_path / "data", env={"BASTION_CLAMD_ADDRESS": small_clamd.address}).start()
    try:
        name, token = server.create_user()
        api = hf_api(server, token)
        repo_id = f"{name}/big"
        api.create_repo(repo_id)
        api.upload_file(path_or_fileobj=os.urandom(3 * MiB), path_in_repo="big.bin", repo_id=repo_id)
        api.upload_file(path_or_fileobj=b"small and fine", path_in_repo="small.txt", repo_id=repo_id)
        sec = wait_for(lambda: (s := _security(server, token, repo_id)) and all(
            f.status not in ("queued", "unscanned") for f in s.values()) and s)
        big = sec["big.bin"]
        assert big.status != "safe" and big.status == "error" and big.safe is False
        assert big.av_scan["status"] == "error" and big.av_scan["virusFound"] is None
        assert "StreamMaxLength" in big.av_scan["summary"]
        assert "MaxFileSize" in big.av_scan["summary"] and "MaxScanSize" in big.av_scan["summary"]
        assert sec["small.txt"].status == "safe"

        engine = _db(server)
        with engine.connect() as conn:
            (attempts, state, error) = conn.execute(sa.text(
                "SELECT attempts, state, last_error FROM scan_jobs WHERE scanner = 'av' AND path = 'big.bin'")).one()
        engine.dispose()
        assert (attempts, state, error) == (1, "done", None)  # deterministic: not retried, not streamed again
    finally:
        server.stop()


def test_clamd_limits_are_errors_that_are_not_retried(tmp_path: Path, small_clamd: ClamdServer) -> None:
    scanner = MalwareScanner(small_clamd.address)
    assert scanner.scan_bytes(b"x" * (MiB // 2)).verdict is Verdict.SAFE

    # Over MaxFileSize but under StreamMaxLength: clamd would say OK without AlertExceedsMax.
    partial = scanner.scan_bytes(os.urandom(MiB + MiB // 2))
    assert partial.verdict is Verdict.ERROR and not partial.retryable
    assert "MaxFileSize" in partial.summary and "Heuristics.Limits.Exceeded" in partial.summary

    refused = scanner.scan_bytes(os.urandom(3 * MiB))
    assert refused.verdict is Verdict.ERROR and not refused.retryable and "StreamMaxLength" in refused.summary

    # Over ClamAV's internal ~2 GiB file limit the file goes in windows; each must fit StreamMaxLength.
    huge = tmp_path / "huge.safetensors"
    with huge.open("wb") as fh:
        fh.truncate(CLAMAV_MAX_FILE + 1)  # sparse: no disk used
    result = scanner.scan_path(huge)
    assert result.verdict is Verdict.ERROR and not result.retryable and "StreamMaxLength" in result.summary
    assert result.details["window"]["number"] == 1


def test_a_file_over_two_gib_is_scanned_whole_in_overlapping_windows(tmp_path: Path) -> None:
    """ClamAV skips files over ~2 GiB (answering OK); Bastion sends them in 1 GiB windows that overlap,
    so a signature past 2 GiB, across a window edge, is found. Sparse files: no disk is used. One file of
    three windows: the first two scan clean, and only the last holds the marker whole."""
    clamd = ClamdServer(tmp_path / "clamd", max_size="1100M").start()
    try:
        scanner = MalwareScanner(clamd.address, 600)
        size = CLAMAV_MAX_FILE + 64 * MiB
        spans = windows(size)
        assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] - b[0] == OVERLAP for a, b in zip(spans, spans[1:], strict=False))
        edge = spans[1][1]  # the marker straddles the end of the second window: only the overlap holds it whole
        assert edge > CLAMAV_MAX_FILE - OVERLAP  # ... at the end of what ClamAV would have read of the file
        huge = tmp_path / "shard.safetensors"
        with huge.open("wb") as fh:
            fh.truncate(size)
            fh.seek(edge - len(CUSTOM_MALWARE_MARKER) // 2)
            fh.write(CUSTOM_MALWARE_MARKER)
        found = scanner.scan_path(huge)
        assert found.verdict is Verdict.UNSAFE and "Bastion.Test.Custom" in found.summary, found.summary
        assert found.details["window"] == {"number": 3, "of": 3, "start": spans[2][0], "end": size}
    finally:
        clamd.stop()
