"""Benchmark: 1 GiB upload and download through Xet vs Git LFS (basic transfer) on one Bastion server,
the bytes a second upload of the same file with 1% of it changed sends through Xet, and a plain-HTTP
`resolve` download (curl, as a browser or git-lfs would) of the Xet-stored file, which Bastion
reconstructs from its xorbs, vs the LFS-stored one, with the server's peak memory meanwhile.

Run from the repository root: `.venv/bin/python bench/xet_transfer.py [--size-mib 1024]`.
The real huggingface_hub client runs in child processes; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.hub_transfer import RssSampler, curl_speed  # noqa: E402
from tests.conftest import BastionServer  # noqa: E402  (the one way to start a server)

MiB = 1024 * 1024
XORB_LOG = re.compile(r"xet xorb upload repo=\d+ xorb=\w+ bytes=(\d+)")


def client(server: BastionServer, token: str, home: Path, code: str, *, xet: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_IMPLICIT_TOKEN")}
    env.update({"HF_ENDPOINT": server.url, "HF_TOKEN": token, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"})
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    prelude = "import json, time, hashlib, os\nfrom huggingface_hub import HfApi, hf_hub_download\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"client failed:\n{proc.stderr[-4000:]}\n{server.server_log()[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def upload(server: BastionServer, token: str, home: Path, path: Path, repo: str, *, xet: bool) -> float:
    return client(server, token, home, f"""
t = time.perf_counter()
HfApi().upload_file(path_or_fileobj={str(path)!r}, path_in_repo="weights.bin", repo_id={repo!r})
print(json.dumps({{"s": time.perf_counter() - t}}))
""", xet=xet)["s"]


def download(server: BastionServer, token: str, home: Path, repo: str, dest: Path, *, xet: bool) -> tuple[float, str]:
    out = client(server, token, home, f"""
t = time.perf_counter()
p = hf_hub_download({repo!r}, "weights.bin", local_dir={str(dest)!r})
s = time.perf_counter() - t
h = hashlib.sha256()
with open(p, "rb") as fh:
    for b in iter(lambda: fh.read(1 << 22), b""):
        h.update(b)
print(json.dumps({{"s": s, "sha": h.hexdigest()}}))
""", xet=xet)
    return out["s"], out["sha"]


def weights(seed: int, size: int) -> bytearray:
    """Random mantissas with a regular exponent byte: compresses like real fp32 weights, a little."""
    rng = random.Random(seed)
    raw = bytearray()
    while len(raw) < size:
        raw += rng.randbytes(min(64 * MiB, size - len(raw)))
    raw[3::4] = bytes([0x3F]) * len(raw[3::4])
    return raw


def sha256_of(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="bastion-xet-bench-"))
    # Basic LFS transfer for the whole file: no multipart below 2x the file size.
    server = BastionServer(work / "server", env={"BASTION_MULTIPART_THRESHOLD": str(2 * size + MiB)}).start()
    try:
        name, token = server.create_user()
        for repo in ("xet", "lfs"):
            client(server, token, work / "home-admin", f'HfApi().create_repo("{name}/{repo}")\nprint("{{}}")',
                   xet=False)
        data = weights(1, size)
        src_xet = work / "xet.bin"
        src_xet.write_bytes(data)
        data[0:8] = b"LFS-copy"  # a different object, so neither upload finds the other's bytes
        src_lfs = work / "lfs.bin"
        src_lfs.write_bytes(data)

        mark = len(server.server_log())
        pid = server.proc.pid  # type: ignore[union-attr]
        with RssSampler(pid) as rss_xet:
            t_up_xet = upload(server, token, work / "home-up-xet", src_xet, f"{name}/xet", xet=True)
        sent_first = sum(int(m.group(1)) for m in XORB_LOG.finditer(server.server_log()[mark:]))
        with RssSampler(pid) as rss_lfs:
            t_up_lfs = upload(server, token, work / "home-up-lfs", src_lfs, f"{name}/lfs", xet=False)
        up_rss = {"xet": rss_xet.peak, "lfs": rss_lfs.peak}

        t_dl_xet, sha_xet = download(server, token, work / "home-dl-xet", f"{name}/xet", work / "dl-xet", xet=True)
        t_dl_lfs, sha_lfs = download(server, token, work / "home-dl-lfs", f"{name}/lfs", work / "dl-lfs", xet=False)
        assert sha_xet == sha256_of(src_xet) and sha_lfs == sha256_of(src_lfs), "download mismatch"
        assert "xet reconstruction" in server.server_log()[mark:], "the Xet download did not use Xet"

        # Plain HTTP, no Xet client: the LFS file is sent from the blob store, the Xet one rebuilt from xorbs.
        auth = [f"Authorization: Bearer {token}"]
        plain = {}
        for repo in ("lfs", "xet"):
            url = f"{server.url}/{name}/{repo}/resolve/main/weights.bin"
            curl_speed(url, auth)  # warm the page cache
            with RssSampler(pid) as rss:
                speed = max(curl_speed(url, auth) for _ in range(2))
            plain[repo] = (speed, rss.peak)

        # Second upload: 1% of the bytes changed, in 16 regions spread over the file; fresh client
        # cache, so every saved byte comes from Bastion's global-dedupe answers.
        data[0:8] = bytes(src_xet.open("rb").read(8))
        rng = random.Random(2)
        region = size // 100 // 16
        for k in range(16):
            at = rng.randrange(k * size // 16, (k + 1) * size // 16 - region)
            data[at:at + region] = rng.randbytes(region)
        edited = work / "edited.bin"
        edited.write_bytes(data)
        del data
        mark = len(server.server_log())
        t_up2 = upload(server, token, work / "home-up-edit", edited, f"{name}/xet", xet=True)
        sent_second = sum(int(m.group(1)) for m in XORB_LOG.finditer(server.server_log()[mark:]))
        t_dl2, sha2 = download(server, token, work / "home-dl-edit", f"{name}/xet", work / "dl-edit", xet=True)
        assert sha2 == sha256_of(edited)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    def rate(s: float) -> str:
        return f"{s:7.2f} s  {size / MiB / s:8.1f} MiB/s"

    print(f"file: {size / MiB:.0f} MiB, 1 Bastion server (granian, 1 worker, SQLite), client on loopback")
    print(f"upload   xet  {rate(t_up_xet)}   (xorb bytes sent: {sent_first / MiB:.1f} MiB; "
          f"peak server RSS {up_rss['xet'] / 1024:.0f} MiB)")
    print(f"upload   lfs  {rate(t_up_lfs)}   (peak server RSS {up_rss['lfs'] / 1024:.0f} MiB)")
    print(f"upload   xet/lfs time ratio: {t_up_xet / t_up_lfs:.2f}")
    print(f"download xet  {rate(t_dl_xet)}")
    print(f"download lfs  {rate(t_dl_lfs)}")
    print(f"download xet/lfs time ratio: {t_dl_xet / t_dl_lfs:.2f}")
    for repo in ("xet", "lfs"):
        speed, peak = plain[repo]
        print(f"plain-HTTP resolve of the {repo}-stored file (curl, best of 2): {speed / MiB:8.1f} MiB/s, "
              f"peak server RSS {peak / 1024:.0f} MiB")
    print(f"plain-HTTP resolve xet/lfs speed ratio: {plain['xet'][0] / plain['lfs'][0]:.2f}")
    print(f"re-upload with 1% changed (16 regions): {rate(t_up2)}, sent {sent_second / MiB:.2f} MiB = "
          f"{100 * sent_second / size:.2f}% of the file (goal < 5%)")
    print(f"download of the edited file via xet: {rate(t_dl2)}")


if __name__ == "__main__":
    main()
