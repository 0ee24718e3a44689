"""Finding 7: a decompression bomb. A 1 MB `.pt` whose data.pkl inflates to 1 GiB made the pickle
scanner hold about 2 GB, inside the server (scan workers were its threads), and then call it safe.
Scans now run in child processes under OS limits, and the scanner inflates in bounded memory."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.scan_bounds import write_bomb
from tests.conftest import BastionServer, hf_api, wait_for

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "model.pt"
    write_bomb(path)
    return path


def test_the_bomb_is_what_the_report_describes(bomb: Path) -> None:
    import zipfile

    assert bomb.stat().st_size < 1.1 * MiB
    with zipfile.ZipFile(bomb) as zf:
        info = zf.getinfo("archive/data.pkl")
        assert info.file_size == GiB and info.compress_type == zipfile.ZIP_DEFLATED
        with zf.open(info) as fh:  # a real, well-formed stream: the head of a BINBYTES8 pickle
            assert fh.read(11) == b"\x80\x04\x8e" + struct.pack("<Q", GiB - 12)


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("bounds"), env={
        "BASTION_SCANNERS": '["pickle", "secrets"]', "BASTION_SCAN_MEMORY_LIMIT_MB": "256"}).start()
    yield server
    server.stop()


def _pickle_scan(server: BastionServer, token: str, repo_id: str, path: str) -> dict | None:  # type: ignore[type-arg]
    entry = hf_api(server, token).get_paths_info(repo_id, [path], expand=True)[0]
    scan = entry.security.pickle_import_scan if entry.security is not None else None
    return scan if scan and scan.get("status") not in ("queued", "unscanned") else None


def _healthy(server: BastionServer) -> bool:
    return server.proc is not None and server.proc.poll() is None and httpx.get(
        f"{server.url}/api/health", timeout=10).status_code == 200


def test_a_decompression_bomb_gets_a_verdict_and_the_server_stays_up(bounded_server: BastionServer,
                                                                     bomb: Path) -> None:
    server = bounded_server
    name, token = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/bomb"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=str(bomb), path_in_repo="model.pt", repo_id=repo_id)
    deadline = time.monotonic() + 240
    scan = None
    while scan is None and time.monotonic() < deadline:
        assert _healthy(server)  # the server answers while the bomb is scanned
        scan = _pickle_scan(server, token, repo_id, "model.pt")
        time.sleep(0.5)
    assert scan is not None, "no verdict within 240 s"
    assert scan["status"] != "safe", scan
    assert "inflate" in json.dumps(scan["problems"]), scan
    assert _healthy(server)


def test_a_scan_over_its_memory_limit_fails_alone(bounded_server: BastionServer) -> None:
    """A pickle that needs more memory than the scan may use (5 million lists, within the walker's own
    limits): its scan is killed with verdict `error`, the server and the other scans go on."""
    server = bounded_server
    name, token = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/hungry"
    api.create_repo(repo_id)
    hungry = b"\x80\x04]" + (b"(" + b"]" * 1000 + b"e") * 5000 + b"."
    api.upload_file(path_or_fileobj=hungry, path_in_repo="hungry.pkl", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.",
                    path_in_repo="state.pkl", repo_id=repo_id)
    scan = wait_for(lambda: _pickle_scan(server, token, repo_id, "hungry.pkl"), timeout=240)
    assert scan["status"] == "error" and "memory limit (256 MiB)" in scan["summary"], scan
    assert wait_for(lambda: _pickle_scan(server, token, repo_id, "state.pkl"), timeout=120)["status"] == "safe"
    assert _healthy(server)


def test_a_scan_over_its_cpu_limit_fails_alone(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = BastionServer(tmp_path_factory.mktemp("cpu"), env={
        "BASTION_SCANNERS": '["pickle"]', "BASTION_SCAN_CPU_SECONDS": "1"}).start()
    try:
        name, token = server.create_user()
        api = hf_api(server, token)
        repo_id = f"{name}/slow"
        api.create_repo(repo_id)
        # Ten million NONE/POP opcodes: seconds of walking, under every limit of the walker itself.
        api.upload_file(path_or_fileobj=b"\x80\x04" + b"N0" * 5_000_000 + b"N.", path_in_repo="slow.pkl",
                        repo_id=repo_id)
        scan = wait_for(lambda: _pickle_scan(server, token, repo_id, "slow.pkl"), timeout=240)
        assert scan["status"] == "error" and "CPU time limit (1 s)" in scan["summary"], scan
        assert _healthy(server)
    finally:
        server.stop()


_PEAK = """
import json, sys
from pathlib import Path
from bastion.scanning.scanners.pickles import PickleScanner

def peak_kib():
    # This process's own peak (VmHWM): ru_maxrss would carry over the parent's at fork + exec.
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

result = PickleScanner().scan_path(Path(sys.argv[1]))
print(json.dumps({"verdict": str(result.verdict), "problems": result.details.get("problems"),
                  "peak_kib": peak_kib()}))
"""


def test_the_pickle_scanner_inflates_the_bomb_in_bounded_memory(bomb: Path) -> None:
    """The scanner itself, without any OS limit, in a process of its own: its peak RSS stays far below
    the inflated size (it was 2.1 GB). bench/scan_bounds.py prints the figures."""
    out = subprocess.run([sys.executable, "-c", _PEAK, str(bomb)], capture_output=True, text=True, timeout=300,
                         check=True)
    report = json.loads(out.stdout)
    assert report["verdict"] != "safe", report
    assert report["peak_kib"] < 256 * 1024, report
