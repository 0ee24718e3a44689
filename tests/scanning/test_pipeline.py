"""The scanning pipeline end to end: every commit scanned, verdicts in the API, durable jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import (
    CUSTOM_MALWARE_MARKER,
    EICAR,
    BastionServer,
    ClamdServer,
    hf_api,
    random_binary,
    wait_for,
)

# os.system("true") as a protocol-2 pickle, assembled by hand: inert, and never loaded by anything.
MALICIOUS_PICKLE = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
# {"a": 1} as a pickle: no imports at all.
BENIGN_PICKLE = b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(server.env.get("BASTION_DATABASE_URL") or f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def _statuses(server: BastionServer, token: str, repo_id: str) -> dict[str, object]:
    api = hf_api(server, token)
    return {e.path: e.security for e in api.list_repo_tree(repo_id, recursive=True, expand=True)
            if hasattr(e, "security")}


def _scans_done(server: BastionServer, token: str, repo_id: str) -> dict[str, object] | None:
    info = hf_api(server, token).model_info(repo_id, securityStatus=True)
    status = info.security_repo_status
    return status if status and status["scansDone"] else None


def test_every_commit_is_scanned_and_reported(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/scanned"
    api.create_repo(repo_id)
    api.create_commit(repo_id, commit_message="mixed", operations=[
        CommitOperationAdd("README.md", b"# hello\n"),
        CommitOperationAdd("model.pkl", MALICIOUS_PICKLE),
        CommitOperationAdd("state.pkl", BENIGN_PICKLE),
        CommitOperationAdd("eicar.com", EICAR),
        CommitOperationAdd("tools/dropper.bin", b"\x00\x01" + CUSTOM_MALWARE_MARKER + os.urandom(64)),
    ])
    status = wait_for(lambda: _scans_done(server, token, repo_id))
    # The Hub's shape: {path, level}, the level from the Hub's status enum.
    assert sorted((f["path"], f["level"]) for f in status["filesWithIssues"]) == [
        ("eicar.com", "unsafe"), ("model.pkl", "unsafe"), ("tools/dropper.bin", "unsafe")]

    sec = _statuses(server, token, repo_id)
    assert sec["README.md"].status == "safe" and sec["README.md"].safe
    assert sec["state.pkl"].status == "safe"
    assert sec["model.pkl"].status == "unsafe"
    imports = sec["model.pkl"].pickle_import_scan["imports"]
    assert {"module": "os", "name": "system", "safety": "dangerous"} in [
        {k: i[k] for k in ("module", "name", "safety")} for i in imports]
    assert sec["eicar.com"].status == "unsafe" and sec["eicar.com"].av_scan["virusFound"] is True
    assert "Bastion.Test.EICAR" in sec["eicar.com"].av_scan["virusNames"][0]
    assert sec["tools/dropper.bin"].av_scan["virusFound"] is True
    scan = httpx.get(f"{server.url}/api/models/{repo_id}/scan", headers={"authorization": f"Bearer {token}"}).json()
    assert scan["scansDone"] is True and len(scan["files"]) == 6

    # The repository page warns, and the file page explains each import in plain words.
    page = httpx.get(f"{server.url}/{repo_id}", headers={"accept": "text/html"})
    assert page.status_code == 200 and 'id="security-warning"' in page.text
    warning = page.text.split('id="security-warning"')[1].split("</div>")[0]
    assert "model.pkl" in warning and "eicar.com" in warning and "README.md" not in warning
    blob = httpx.get(f"{server.url}/{repo_id}/blob/main/model.pkl", headers={"accept": "text/html"}).text
    table = blob.split('id="pickle-imports"')[1].split("</table>")[0]
    assert "<code>os</code>" in table and "<code>system</code>" in table and "dangerous" in table
    assert "safety-dangerous" in table
    calm = httpx.get(f"{server.url}/{repo_id}/blob/main/README.md", headers={"accept": "text/html"}).text
    assert "scan-safe" in calm

    with _db(server).connect() as conn:
        findings = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = 'repo.scan_finding' "
                                        "AND namespace = :ns"), {"ns": name}).scalars().all()
    assert sorted({(d if isinstance(d, dict) else __import__("json").loads(d))["path"] for d in findings}) == \
        ["eicar.com", "model.pkl", "tools/dropper.bin"]


def test_identical_content_is_scanned_once(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    blob = b"shared content " + os.urandom(16).hex().encode()  # text: a NUL byte would make it LFS
    for i in range(2):
        api.create_repo(f"{name}/twin{i}")
        api.upload_file(path_or_fileobj=blob, path_in_repo=f"f{i}.txt", repo_id=f"{name}/twin{i}")
        wait_for(lambda i=i: _scans_done(server, token, f"{name}/twin{i}"))
    git_oid = next(e.blob_id for e in api.list_repo_tree(f"{name}/twin0") if e.path == "f0.txt")
    with _db(server).connect() as conn:
        jobs = conn.execute(sa.text("SELECT count(*) FROM scan_jobs WHERE blob_key = :k"), {"k": git_oid}).scalar()
    assert jobs == 4  # one per scanner (av, pickle, format, secrets), not one per repo


def test_unavailable_scanner_is_never_safe(tmp_path: Path) -> None:
    server = BastionServer(tmp_path / "noav", env={"BASTION_CLAMD_ADDRESS": f"unix://{tmp_path}/missing.sock"}).start()
    try:
        name, token = server.create_user()
        api = hf_api(server, token)
        api.create_repo(f"{name}/r")
        api.upload_file(path_or_fileobj=b"plain text", path_in_repo="a.txt", repo_id=f"{name}/r")
        # `unavailable` is not in the Hub's enum: it reads `unscanned` there, Bastion's word in `bastionStatus`.
        sec = wait_for(lambda: (s := _statuses(server, token, f"{name}/r")["a.txt"]).av_scan["bastionStatus"]
                       == "unavailable" and s.pickle_import_scan["status"] != "queued" and s)
        assert sec.status == "unscanned" and sec.safe is False and sec.av_scan["status"] == "unscanned"
        assert sec.pickle_import_scan["status"] == "safe"
        assert _scans_done(server, token, f"{name}/r") is None
    finally:
        server.stop()


def test_block_unsafe_policy_rejects_before_the_ref_moves(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/guarded"
    api.create_repo(repo_id)
    resp = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"blockUnsafeFiles": True},
                     headers={"authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    head = api.model_info(repo_id).sha
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=MALICIOUS_PICKLE, path_in_repo="evil.pkl", repo_id=repo_id)
    assert exc.value.response.status_code == 403 and "evil.pkl is unsafe" in exc.value.response.headers["x-error-message"]
    assert api.model_info(repo_id).sha == head
    api.upload_file(path_or_fileobj=BENIGN_PICKLE, path_in_repo="ok.pkl", repo_id=repo_id)
    assert api.model_info(repo_id).sha != head
    with _db(server).connect() as conn:
        rejected = conn.execute(sa.text("SELECT count(*) FROM audit_events WHERE action = 'repo.scan_policy_reject' "
                                        "AND namespace = :ns"), {"ns": name}).scalar()
    assert rejected == 1


@pytest.mark.parametrize("queue", ["sqlite", "redis"])
def test_worker_killed_mid_scan_the_job_completes(tmp_path: Path, clamd: ClamdServer, queue: str) -> None:
    """Scale-out shape: `bastion worker` processes; SIGKILL one mid-scan, start another, nothing is lost."""
    env = {"BASTION_CLAMD_ADDRESS": clamd.address, "BASTION_EMBEDDED_WORKERS": "0", "BASTION_SCAN_LEASE_SECONDS": "4",
           "BASTION_QUEUE_NAME": f"t{os.getpid()}{os.urandom(3).hex()}"}
    if queue == "redis":
        env["BASTION_QUEUE_URL"] = "redis://127.0.0.1:6379/0"
    server = BastionServer(tmp_path / "data", env=env).start()
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker{len(workers)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "worker", "--workers", "1"], env=server.env,
                                stdout=log, stderr=subprocess.STDOUT)
        workers.append(proc)
        return proc

    try:
        name, token = server.create_user()
        api = hf_api(server, token)
        repo_id = f"{name}/big"
        api.create_repo(repo_id)
        big = tmp_path / "big.bin"
        with big.open("wb") as fh:  # large enough that clamd needs a moment
            for _ in range(30):
                fh.write(random_binary(8 * 1024 * 1024))
        api.upload_file(path_or_fileobj=str(big), path_in_repo="big.bin", repo_id=repo_id)
        engine = _db(server)

        def running() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(sa.text("SELECT count(*) FROM scan_jobs WHERE state = 'running'")).scalar())

        first = start_worker()
        wait_for(running, timeout=60, interval=0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        start_worker()

        def all_done() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM scan_jobs WHERE state != 'done'")).scalar() == 0

        wait_for(all_done, timeout=120, interval=0.2)
        with engine.connect() as conn:
            jobs = conn.execute(sa.text("SELECT scanner, attempts FROM scan_jobs")).all()
            results = conn.execute(sa.text("SELECT blob_key, scanner, scanner_version, verdict, summary FROM scan_results")).all()
        assert max(j.attempts for j in jobs) >= 2  # the killed attempt, then the one that finished
        assert len(results) == len({(r.blob_key, r.scanner, r.scanner_version) for r in results})
        assert {r.scanner: r.verdict for r in results if r.blob_key != "x"}.get("av") == "safe", [tuple(r) for r in results]
        sec = _statuses(server, token, repo_id)["big.bin"]
        assert sec.status == "safe", sec.av_scan
        engine.dispose()
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        server.stop()


def test_bastion_scan_cli(tmp_path: Path, clamd: ClamdServer) -> None:
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("fine")
    (root / "sub" / "evil.pt").write_bytes(MALICIOUS_PICKLE)
    env = {**os.environ, "BASTION_CLAMD_ADDRESS": clamd.address}
    run = [sys.executable, "-m", "bastion.cli", "scan"]
    out = subprocess.run([*run, str(root), "--json"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    import json

    doc = json.loads(out.stdout)
    assert set(doc) == {"scanner", "files", "findings"} and doc["scanner"]["name"] == "bastion"
    by_path = {f["path"]: f for f in doc["files"]}
    assert set(by_path) == {"ok.txt", "sub/evil.pt"}
    assert by_path["ok.txt"]["status"] == "safe"
    evil = by_path["sub/evil.pt"]
    assert evil["status"] == "unsafe" and evil["scans"]["av"]["status"] == "safe"
    assert evil["scans"]["pickle"]["imports"][0]["module"] == "os"
    only_ok = subprocess.run([*run, str(root / "ok.txt"), "--json", "--only", "malware"], env=env, capture_output=True)
    assert only_ok.returncode == 0 and set(json.loads(only_ok.stdout)["files"][0]["scans"]) == {"av"}
    assert subprocess.run([*run, "--only", "nope", str(root)], env=env, capture_output=True).returncode == 2
    assert subprocess.run([*run, str(tmp_path / "missing")], env=env, capture_output=True).returncode == 2
