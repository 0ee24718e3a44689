"""Benchmark: clone (2,000 commits, 5,000 files) through Bastion vs `git http-backend` behind nginx +
fcgiwrap on the same bare repository; 1 GiB push with `git lfs push` vs an API upload.

Run from the repository root: `.venv/bin/python -m bench.git_clone [--commits 2000 --files 5000 --lfs-mib 1024]`.
Installs Debian's nginx and fcgiwrap if missing. Everything listens on 127.0.0.1. Prints figures
and ratios measured in the same run; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from tests.conftest import BastionServer, free_port  # noqa: E402  (the one way to start a server)

MiB = 1024 * 1024
HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
WORDS = ("tensor", "layer", "weight", "bias", "token", "embed", "attention", "head", "norm", "dropout",
         "config", "vocab", "batch", "epoch", "loss", "grad", "optim", "shard", "merge", "split")


def ensure_packages() -> tuple[str, str]:
    """nginx and fcgiwrap binaries, installed from Debian's archive if this machine lacks them."""
    missing = [pkg for pkg, binary in (("nginx-light", "nginx"), ("fcgiwrap", "fcgiwrap"))
               if not (shutil.which(binary) or Path(f"/usr/sbin/{binary}").exists())]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    fcgiwrap = shutil.which("fcgiwrap") or "/usr/sbin/fcgiwrap"
    return nginx, fcgiwrap


def git_env(home: Path) -> dict[str, str]:
    """No user or system git config: both servers are measured with the same client settings."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / ".gitconfig"
    config.write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_GLOBAL": str(config),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "LANG": "C", "NO_PROXY": "*"}
    subprocess.run(["git", "lfs", "install", "--skip-repo"], env=env, check=True, capture_output=True)
    return env


def fast_import_stream(commits: int, files: int, seed: int = 7) -> bytes:
    """A history of `commits` commits whose final tree has `files` files of varied text.

    Each commit adds its share of new files and edits a few existing ones, so the pack holds
    deltas and many trees, as a real repository's does.
    """
    rng = random.Random(seed)
    out: list[bytes] = []
    paths: list[str] = []
    per_commit = files / commits
    when = 1_700_000_000
    for i in range(commits):
        target = round((i + 1) * per_commit)
        changes: list[tuple[str, bytes]] = []
        while len(paths) < target:
            n = len(paths)
            path = f"data/{n % 50:02d}/{n // 50:03d}/file_{n:05d}.txt"
            paths.append(path)
            changes.append((path, _text(rng, 40)))
        for path in rng.sample(paths, min(3, len(paths))):
            changes.append((path, _text(rng, 40)))
        message = f"commit {i}: {rng.choice(WORDS)} {rng.choice(WORDS)}\n".encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"committer Bench <bench@example.com> {when + i * 60} +0000\n".encode())
        out.append(b"data %d\n%s\n" % (len(message), message))
        for path, content in dict(changes).items():
            out.append(f"M 100644 inline {path}\n".encode())
            out.append(b"data %d\n%s\n" % (len(content), content))
    return b"".join(out)


def _text(rng: random.Random, lines: int) -> bytes:
    return "".join(" ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(8)) + "\n"
                   for _ in range(lines)).encode()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(args: list[str], env: dict[str, str], cwd: Path | None = None, data: bytes | None = None) -> None:
    proc = subprocess.run(args, env=env, cwd=cwd, input=data, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")


def start_http_backend(work: Path, project_root: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """nginx → fcgiwrap → git http-backend serving every repository under `project_root`."""
    nginx, fcgiwrap = ensure_packages()
    sock = work / "fcgiwrap.sock"
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""
        user root;
        worker_processes 2;
        error_log {work}/nginx-error.log;
        pid {work}/nginx.pid;
        events {{ worker_connections 256; }}
        http {{
            access_log off;
            client_body_temp_path {work}/nginx-body;
            fastcgi_temp_path {work}/nginx-fastcgi;
            proxy_temp_path {work}/nginx-proxy;
            uwsgi_temp_path {work}/nginx-uwsgi;
            scgi_temp_path {work}/nginx-scgi;
            server {{
                listen 127.0.0.1:{port};
                client_max_body_size 0;
                location ~ ^/git(/.*)$ {{
                    include /etc/nginx/fastcgi_params;
                    fastcgi_pass unix:{sock};
                    fastcgi_buffering off;
                    fastcgi_request_buffering off;
                    fastcgi_param SCRIPT_FILENAME {HTTP_BACKEND};
                    fastcgi_param GIT_PROJECT_ROOT {project_root};
                    fastcgi_param GIT_HTTP_EXPORT_ALL "";
                    fastcgi_param GIT_PROTOCOL $http_git_protocol;
                    fastcgi_param PATH_INFO $1;
                }}
            }}
        }}
    """))
    procs = [subprocess.Popen([fcgiwrap, "-c", "4", "-s", f"unix:{sock}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (sock.exists() and (work / "nginx.pid").exists()):
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/git", procs


def bench_clone(server: BastionServer, token: str, work: Path, env: dict[str, str], commits: int, files: int,
                rounds: int) -> None:
    from huggingface_hub import HfApi

    HfApi(endpoint=server.url, token=token).create_repo("bench/history")
    # Build the history once with git fast-import, then push it into Bastion's bare repository
    # directly on disk: the setup is not what is measured, only the clones are.
    source = work / "source.git"
    run(["git", "init", "-q", "--bare", str(source)], env)
    t_gen = timed(lambda: run(["git", "fast-import", "--quiet"], env, cwd=source,
                              data=fast_import_stream(commits, files)))
    run(["git", "gc", "-q", "--aggressive"], env, cwd=source)
    [bare] = [p for p in (server.data_dir / "repos").glob("*/*.git")]
    run(["git", "push", "-q", "--force", str(bare), "main:main"], env, cwd=source)
    run(["git", "gc", "-q"], env, cwd=bare)
    count = subprocess.run(["git", "rev-list", "--count", "main"], env=env, cwd=bare, capture_output=True,
                           text=True, check=True).stdout.strip()
    nfiles = len(subprocess.run(["git", "ls-tree", "-r", "--name-only", "main"], env=env, cwd=bare,
                                capture_output=True, text=True, check=True).stdout.splitlines())
    size = sum(p.stat().st_size for p in (bare / "objects" / "pack").glob("*.pack"))
    print(f"clone repository: {count} commits, {nfiles} files, pack {size / MiB:.1f} MiB "
          f"(generated in {t_gen:.1f} s)")

    base, procs = start_http_backend(work, bare.parent)
    try:
        urls = {"bastion": f"{server.url}/bench/history", "http-backend": f"{base}/{bare.name}"}
        best: dict[str, float] = {k: float("inf") for k in urls}
        for i in range(rounds + 1):  # the first round warms the page cache and is not counted
            for name, url in urls.items():
                dest = work / f"clone-{name}-{i}"
                took = timed(lambda url=url, dest=dest: run(["git", "clone", "-q", "--bare", url, str(dest)], env))
                ok = subprocess.run(["git", "rev-list", "--count", "main"], env=env, cwd=dest, capture_output=True,
                                    text=True, check=True).stdout.strip()
                assert ok == count, f"{name} clone has {ok} commits, expected {count}"
                shutil.rmtree(dest)
                if i:
                    best[name] = min(best[name], took)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    ratio = best["bastion"] / best["http-backend"]
    print(f"clone (bare, protocol v2, best of {rounds})  bastion: {best['bastion']:.2f} s   "
          f"nginx+fcgiwrap+git http-backend: {best['http-backend']:.2f} s   "
          f"ratio bastion/http-backend: {ratio:.2f}x   (goal <= 1.2x)")


def write_random(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(size // (16 * MiB)):
            block = os.urandom(16 * MiB)
            h.update(block)
            fh.write(block)
    return h.hexdigest()


def bench_lfs_push(server: BastionServer, token: str, work: Path, env: dict[str, str], size: int) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=server.url, token=token)
    api.create_repo("bench/lfs")
    api.create_repo("bench/uploaded")
    # Two different files of the same size: the blob store keeps an object once, so a second
    # transfer of the same bytes would be skipped and measure nothing.
    via_git, via_api = work / "lfs-git.bin", work / "lfs-api.bin"
    write_random(via_git, size)
    write_random(via_api, size)

    host = server.url.removeprefix("http://")
    clone = work / "lfs-clone"
    run(["git", "clone", "-q", f"http://bench:{token}@{host}/bench/lfs", str(clone)], env)
    shutil.move(via_git, clone / "weights.bin")  # *.bin is LFS in the default .gitattributes
    run(["git", "add", "weights.bin"], env, cwd=clone)
    run(["git", "commit", "-q", "-m", "weights"], env, cwd=clone)
    lfs = timed(lambda: run(["git", "lfs", "push", "origin", "main"], env, cwd=clone))
    ref = timed(lambda: run(["git", "push", "-q", "origin", "main"], env, cwd=clone))
    os.sync()
    up = timed(lambda: api.upload_file(path_or_fileobj=str(via_api), path_in_repo="weights.bin",
                                       repo_id="bench/uploaded"))
    os.sync()
    assert [f.size for f in api.list_repo_tree("bench/lfs") if f.path == "weights.bin"] == [size]
    mib = size / MiB
    print(f"push {mib:.0f} MiB LFS file  git lfs push: {lfs:.2f} s ({mib / lfs:.0f} MiB/s), then git push of "
          f"the commit {ref:.2f} s   API upload (huggingface_hub, HF_HUB_DISABLE_XET=1): {up:.2f} s "
          f"({mib / up:.0f} MiB/s)   ratio git-lfs/API: {lfs / up:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lfs-mib", type=int, default=1024)
    args = parser.parse_args()
    base = Path("bench/_work").resolve()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="git-clone-", dir=base))
    env = git_env(work / "home")
    server = BastionServer(work / "data", env={"BASTION_MULTIPART_THRESHOLD": str(512 * MiB),
                                               "BASTION_MULTIPART_CHUNK_SIZE": str(128 * MiB)}).start()
    try:
        _name, token = server.create_user("bench")
        bench_clone(server, token, work, env, args.commits, args.files, args.rounds)
        bench_lfs_push(server, token, work, env, args.lfs_mib * MiB)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
