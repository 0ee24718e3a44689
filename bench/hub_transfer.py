"""Benchmark: 1 GiB LFS download through `resolve` vs nginx, 1 GiB upload vs sha256sum + cp, peak RSS.

Run from the repository root: `.venv/bin/python -m bench.hub_transfer [--size-mib 1024]`.
Prints figures and ratios measured in the same run; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from tests.conftest import BastionServer, free_port  # noqa: E402  (the one way to start a server)

MiB = 1024 * 1024


def ensure_nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        path = "/usr/sbin/nginx"
    return path


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (granian runs workers as children)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, tree_rss_kib(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.join()


def curl_speed(url: str, headers: list[str], rng: str | None = None) -> float:
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url]
    for h in headers:
        cmd += ["-H", h]
    if rng:
        cmd += ["-r", rng]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    base = Path("bench/_work").resolve()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hub-transfer-", dir=base))
    src = work / "payload.bin"
    h = hashlib.sha256()
    with src.open("wb") as fh:
        for _ in range(size // (16 * MiB)):
            block = os.urandom(16 * MiB)
            h.update(block)
            fh.write(block)
    oid = h.hexdigest()
    os.sync()  # the payload's own dirty pages must not be charged to whichever measurement syncs first

    # ---- upload: client vs the physical floor of a verified write (sha256sum + cp) --------------
    floor_dst = work / "floor-copy.bin"
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", str(src)], check=True, capture_output=True)
    shutil.copyfile(src, floor_dst)
    os.sync()
    floor = time.perf_counter() - t0
    floor_dst.unlink()

    server = BastionServer(work / "data", env={"BASTION_STRICT_AUTHZ": "0",
                                               "BASTION_MULTIPART_THRESHOLD": str(512 * MiB),
                                               "BASTION_MULTIPART_CHUNK_SIZE": str(128 * MiB)}).start()
    sampler = RssSampler(server.proc.pid)  # type: ignore[union-attr]
    sampler.start()
    try:
        from huggingface_hub import HfApi

        name, token = server.create_user("bench")
        api = HfApi(endpoint=server.url, token=token)
        api.create_repo("bench/big")
        t0 = time.perf_counter()
        api.upload_file(path_or_fileobj=str(src), path_in_repo="payload.bin", repo_id="bench/big")
        os.sync()
        upload = time.perf_counter() - t0
        upload_rss = sampler.peak

        blob = server.data_dir / "lfs" / oid[:2] / oid[2:4] / oid
        assert blob.stat().st_size == size

        # ---- download: Bastion resolve vs nginx on the same file ------------------------------
        port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""
            user root;
            worker_processes 1;
            error_log {work}/nginx-error.log;
            pid {work}/nginx.pid;
            events {{ worker_connections 64; }}
            http {{
                access_log off;
                sendfile on;
                tcp_nopush on;
                server {{
                    listen 127.0.0.1:{port};
                    location / {{ root {blob.parent}; }}
                }}
            }}
        """))
        nginx = subprocess.Popen([ensure_nginx(), "-c", str(conf), "-g", "daemon off;"])
        time.sleep(0.5)
        try:
            auth = [f"Authorization: Bearer {token}"]
            resolve = f"{server.url}/bench/big/resolve/main/payload.bin"
            curl_speed(resolve, auth)  # warm the page cache
            ours = max(curl_speed(resolve, auth) for _ in range(args.rounds))
            theirs = max(curl_speed(f"http://127.0.0.1:{port}/{oid}", []) for _ in range(args.rounds))
            ranged = curl_speed(resolve, auth, f"{size // 2}-")
        finally:
            nginx.terminate()
            nginx.wait()
        download_rss = sampler.peak
    finally:
        sampler.running = False
        server.stop()

    gbps = 1e9
    print(f"payload: {size / MiB:.0f} MiB")
    print(f"download  bastion resolve: {ours / gbps:.2f} GB/s   nginx: {theirs / gbps:.2f} GB/s   "
          f"ratio bastion/nginx: {ours / theirs:.2f}   (goal >= 0.8)")
    print(f"download  bastion ranged second half: {ranged / gbps:.2f} GB/s")
    print(f"upload    huggingface_hub -> bastion: {upload:.2f} s   sha256sum + cp: {floor:.2f} s   "
          f"ratio: {upload / floor:.2f}   (goal <= 1.5)")
    print(f"peak server RSS (all processes): upload {upload_rss / 1024:.0f} MiB, "
          f"through download {download_rss / 1024:.0f} MiB   (goal < 300 MB)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
