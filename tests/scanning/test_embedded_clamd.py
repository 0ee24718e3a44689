"""The embedded clamd: `bastion serve` without BASTION_CLAMD_ADDRESS starts, watches and restarts its own clamd
(Debian's clamav-daemon, for real) with its files in the data dir, and runs freshclam on a schedule."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bastion.config import Settings
from bastion.scanning import clamd
from bastion.scanning.results import Verdict
from bastion.scanning.scanners.malware import MalwareScanner
from tests.conftest import (
    CUSTOM_MALWARE_MARKER,
    EICAR,
    BastionServer,
    ClamdServer,
    hf_api,
    wait_for,
    write_daily,
    write_test_signatures,
)

pytestmark = pytest.mark.skipif(clamd.clamd_binary() is None, reason="needs Debian's clamav-daemon")
PASSWORD = "correct horse battery staple"


def _admin(server: BastionServer) -> tuple[str, str]:
    name, token = server.create_user(admin=True)
    return name, token


def _status(server: BastionServer, token: str) -> dict:
    resp = httpx.get(f"{server.url}/api/admin/clamd", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _av(server: BastionServer, token: str, repo_id: str, path: str) -> dict | None:
    """The file's avScan once the scanner has judged it (not queued or unscanned)."""
    for entry in hf_api(server, token).list_repo_tree(repo_id, recursive=True, expand=True):
        if entry.path == path and getattr(entry, "security", None) is not None:
            av = entry.security.av_scan
            return av if av and av["bastionStatus"] not in ("queued", "unscanned") else None
    return None


def _audit_actions(server: BastionServer) -> list[tuple[str, dict]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT action, details FROM audit_events WHERE action LIKE 'instance.%' "
                                        "ORDER BY id")).all()
    finally:
        engine.dispose()
    import json
    return [(a, json.loads(d) if isinstance(d, str) else d) for a, d in rows]


def _clamd_pids(conf: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"clamd -c {conf}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _admin_html(server: BastionServer, name: str) -> str:
    """The /admin page as the signed-in administrator `name` sees it."""
    from tests.accounts.fixtures import http_login

    client = http_login(server, name, PASSWORD)
    try:
        resp = client.get("/admin")
    finally:
        client.close()
    assert resp.status_code == 200, resp.text[:500]
    return resp.text


def _password_admin(server: BastionServer) -> str:
    name = f"a{os.urandom(4).hex()}"
    subprocess.run([sys.executable, "-m", "bastion.cli", "admin", "create-user", name, "--email", f"{name}@example.com",
                    "--admin", "--password-stdin"], env=server.env, input=PASSWORD + "\n", capture_output=True,
                   text=True, check=True, timeout=120)
    return name


def test_no_signatures_unavailable_then_signatures_bring_clamd_up_and_it_is_restarted(tmp_path: Path) -> None:
    data = tmp_path / "d"
    server = BastionServer(data).start()  # as every test server: no clamd address, nothing in the database dir
    try:
        assert not _clamd_pids(data / "clamav" / "clamd.conf")
        _name, token = _admin(server)
        user, utoken = server.create_user()
        api = hf_api(server, utoken)
        repo = f"{user}/av"
        api.create_repo(repo)

        # No signatures: no clamd is started, and a file's malware verdict is `unavailable` saying why.
        status = _status(server, token)
        assert status["mode"] == "embedded" and status["state"] == "waiting" and status["reachable"] is False
        assert status["reason"] == f"no ClamAV signatures yet in {data / 'clamav' / 'db'}"
        api.upload_file(path_or_fileobj=EICAR, path_in_repo="early.com", repo_id=repo)
        av = wait_for(lambda: _av(server, utoken, repo, "early.com"))
        # The Hub's enum has no `unavailable`: `unscanned` there, Bastion's verdict in `bastionStatus`.
        assert av["status"] == "unscanned" and av["bastionStatus"] == "unavailable"
        assert "no ClamAV signatures yet" in av["summary"]
        assert not _clamd_pids(data / "clamav" / "clamd.conf")

        # Signatures dropped into the database dir later: the supervisor starts clamd with the README's limits.
        write_test_signatures(data / "clamav" / "db")
        write_daily(data / "clamav" / "db", 27001, {"Bastion.Test.Daily": b"BASTION-DAILY-MARKER-0001"})
        status = wait_for(lambda: (s := _status(server, token))["state"] == "running" and s["reachable"] and s)
        assert status["version"]["databaseVersion"] == 27001 and status["version"]["databaseAgeHours"] is not None
        assert status["restarts"] == 0 and _clamd_pids(data / "clamav" / "clamd.conf") == [status["pid"]]
        conf = (data / "clamav" / "clamd.conf").read_text()
        for line in ("StreamMaxLength 4G", "MaxFileSize 4G", "MaxScanSize 4G", "AlertExceedsMax yes",
                     f"LocalSocket {data / 'clamav' / 'clamd.sock'}"):
            assert line in conf.splitlines()
        api.upload_file(path_or_fileobj=b"\x00\x01" + CUSTOM_MALWARE_MARKER, path_in_repo="dropper.bin", repo_id=repo)
        api.upload_file(path_or_fileobj=b"plain text, nothing here\n", path_in_repo="clean.txt", repo_id=repo)
        assert wait_for(lambda: _av(server, utoken, repo, "dropper.bin"))["virusNames"] == ["Bastion.Test.Custom.UNOFFICIAL"]
        assert wait_for(lambda: _av(server, utoken, repo, "clean.txt"))["status"] == "safe"
        assert "/27001/" in wait_for(lambda: _av(server, utoken, repo, "clean.txt"))["version"]
        # The file judged `unavailable` before is scanned again now that clamd runs (its job was kept).
        found = wait_for(lambda: (av := _av(server, utoken, repo, "early.com")) and av["bastionStatus"] != "unavailable"
                         and av, timeout=180)
        assert found["status"] == "unsafe" and found["virusNames"] == ["Bastion.Test.EICAR.UNOFFICIAL"]

        # clamd killed: the supervisor restarts it, and scanning works again.
        first_pid = status["pid"]
        os.kill(first_pid, signal.SIGKILL)
        status = wait_for(lambda: (s := _status(server, token))["state"] == "running" and s["pid"] != first_pid
                          and s["reachable"] and s)
        assert status["restarts"] == 1 and status["lastExit"]["code"] == -signal.SIGKILL
        assert _clamd_pids(data / "clamav" / "clamd.conf") == [status["pid"]]
        api.upload_file(path_or_fileobj=b"\x07" + CUSTOM_MALWARE_MARKER + b"\x07", path_in_repo="after.bin",
                        repo_id=repo)
        assert wait_for(lambda: _av(server, utoken, repo, "after.bin"))["status"] == "unsafe"

        events = _audit_actions(server)
        assert [a for a, _d in events] == ["instance.clamd_start", "instance.clamd_restart"]
        assert events[0][1]["pid"] == first_pid and events[1][1]["lastExit"]["code"] == -signal.SIGKILL

        # The admin page shows the same.
        admin = _password_admin(server)
        html = _admin_html(server, admin)
        assert re.search(r'id="clamd-state"[^>]*>running \(answering\)', html)
        assert f"pid {status['pid']}" in html and "database version 27001" in html
        assert re.search(r'id="clamd-restarts">1 \(last: code -9', html)
        assert "off (<code>BASTION_FRESHCLAM_INTERVAL_HOURS=0</code>)" in html
    finally:
        server.stop()
    # Stopping the server stops its clamd.
    assert wait_for(lambda: not _clamd_pids(data / "clamav" / "clamd.conf"), timeout=30)
    assert clamd.read_status(Settings(data_dir=data))["state"] == "stopped"


def test_explicit_address_wins_no_embedded_clamd(tmp_path: Path, clamd: ClamdServer) -> None:
    data = tmp_path / "d"
    write_test_signatures(data / "clamav" / "db")  # signatures there would start an embedded clamd
    server = BastionServer(data, env={"BASTION_CLAMD_ADDRESS": clamd.address}).start()
    try:
        _name, token = _admin(server)
        status = _status(server, token)
        assert status == {"mode": "external", "address": clamd.address, "scannerEnabled": True, "reachable": True,
                          "state": "running", "version": status["version"]}
        assert status["version"]["engine"].startswith("ClamAV ")
        assert not (data / "clamav" / "status.json").exists() and not (data / "clamav" / "clamd.conf").exists()
        assert not _clamd_pids(data / "clamav" / "clamd.conf")
        user, utoken = server.create_user()
        hf_api(server, utoken).create_repo(f"{user}/r")
        hf_api(server, utoken).upload_file(path_or_fileobj=EICAR, path_in_repo="e.com", repo_id=f"{user}/r")
        assert wait_for(lambda: _av(server, utoken, f"{user}/r", "e.com"))["status"] == "unsafe"
    finally:
        server.stop()


def test_freshclam_failure_is_reported_not_fatal(tmp_path: Path) -> None:
    """No network: freshclam (pointed at a loopback mirror nobody listens on) fails; that is recorded, audited
    once, shown, and clamd keeps scanning with the signatures it has."""
    with socket.socket() as s:  # a port that refuses connections: bound, never listening
        s.bind(("127.0.0.1", 0))
        mirror = f"http://127.0.0.1:{s.getsockname()[1]}"
        data = tmp_path / "d"
        write_test_signatures(data / "clamav" / "db")
        server = BastionServer(data, env={"BASTION_FRESHCLAM_INTERVAL_HOURS": "24",
                                          "BASTION_FRESHCLAM_MIRROR": mirror}).start()
        try:
            _name, token = _admin(server)
            status = wait_for(lambda: (st := _status(server, token))["freshclam"]["lastError"] and st, timeout=300)  # freshclam gives up slowly without a network (DNS, retries)
            fresh = status["freshclam"]
            assert fresh["enabled"] and fresh["mirror"] == mirror and fresh["lastSuccess"] is None
            assert "Couldn't connect to server" in fresh["lastError"] and "Update failed." in fresh["lastError"]
            assert fresh["nextAttempt"] is not None and fresh["lastExitCode"] != 0
            conf = (data / "clamav" / "freshclam.conf").read_text().splitlines()
            assert f"PrivateMirror {mirror}" in conf and f"DatabaseDirectory {data / 'clamav' / 'db'}" in conf
            status = wait_for(lambda: (st := _status(server, token))["state"] == "running" and st)
            assert status["version"]["databaseDate"] is None  # custom signatures only: no daily database
            assert httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200
            user, utoken = server.create_user()
            hf_api(server, utoken).create_repo(f"{user}/r")
            hf_api(server, utoken).upload_file(path_or_fileobj=EICAR, path_in_repo="e.com", repo_id=f"{user}/r")
            assert wait_for(lambda: _av(server, utoken, f"{user}/r", "e.com"))["status"] == "unsafe"
            failed = [d for a, d in _audit_actions(server) if a == "instance.signatures_update_failed"]
            assert len(failed) == 1 and failed[0]["error"] == fresh["lastError"]
            html = _admin_html(server, _password_admin(server))
            assert 'id="freshclam-error"' in html and "last success never" in html
            assert "date unknown (no daily database)" in html
        finally:
            server.stop()


def test_status_needs_an_instance_admin(server: BastionServer) -> None:
    _user, token = server.create_user()
    resp = httpx.get(f"{server.url}/api/admin/clamd", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 403 and "instance administrators only" in resp.headers["x-error-message"]
    assert httpx.get(f"{server.url}/api/admin/clamd", timeout=30).status_code == 401


def test_scans_in_the_restart_gap_are_unavailable_never_safe(tmp_path: Path) -> None:
    """The supervisor stepped by hand (no thread): between clamd's death and its restart, a scan through the
    embedded address is `unavailable` with the supervisor's reason."""
    settings = Settings(data_dir=tmp_path / "d", freshclam_interval_hours=0)
    write_test_signatures(settings.resolved_clamd_database_dir)
    supervisor = clamd.ClamdSupervisor(settings)
    assert supervisor.claim()
    assert not clamd.ClamdSupervisor(settings).claim()  # one supervisor per data dir
    scanner = MalwareScanner(settings.resolved_clamd_address, 30, lambda: clamd.unavailable_reason(settings))
    try:
        supervisor.step()
        wait_for(lambda: supervisor.step() or supervisor.status["state"] == "running")
        assert scanner.scan_bytes(EICAR).verdict is Verdict.UNSAFE
        proc = supervisor._proc
        assert proc is not None
        proc.kill()
        proc.wait(30)
        supervisor.step()  # notices the exit; the restart waits out its back-off
        assert supervisor.status["state"] == "restarting" and supervisor.status["restarts"] == 1
        gap = scanner.scan_bytes(b"harmless")
        assert gap.verdict is Verdict.UNAVAILABLE and gap.summary == "clamd killed by signal 9; restarting"
        wait_for(lambda: supervisor.step() or supervisor.status["state"] == "running")
        assert scanner.scan_bytes(b"harmless").verdict is Verdict.SAFE
    finally:
        supervisor.stop()


def test_version_and_freshclam_output_parsing() -> None:
    parsed = clamd.parse_version("ClamAV 1.4.6/27481/Mon Dec  7 09:18:45 2026")
    assert parsed["engine"] == "ClamAV 1.4.6" and parsed["databaseVersion"] == 27481
    assert parsed["databaseDate"] == "2026-12-07T09:18:45+00:00"
    assert clamd.parse_version("ClamAV 1.4.6")["databaseDate"] is None
    # freshclam 1.4's --stdout lines (LogTime puts the time after "ERROR:")
    out = ("Trying to retrieve CVD header from http://127.0.0.1:1/daily.cvd\n"
           "ERROR: Mon Dec  7 14:06:59 2026 -> remote_cvdhead: Download failed (7) ERROR: Mon Dec  7 14:06:59 2026 ->  "
           "Message: Couldn't connect to server\n"
           "ERROR: check_for_new_database_version: Failed to find daily database\n"
           "ERROR: Update failed for database: daily\nERROR: Update failed for database: daily\nERROR: Update failed.\n")
    assert clamd._freshclam_error(out) == ("remote_cvdhead: Download failed (7) Message: Couldn't connect to server; "
                                           "check_for_new_database_version: Failed to find daily database; "
                                           "Update failed.")
