"""Benchmark: the pages that list a folder, on a folder of 100,000 files against one of 1,000.

Builds two repositories with `git fast-import` (one folder `data/` of N small distinct files each),
pushes them to a `bastion serve` whose tree limits are raised to allow it, and times, anonymously on the
public repos: the web folder page, the web repo page, `GET /api/models/{repo}/scan`, the API tree listing
and `model_info(securityStatus=True)`. Per route: the first request, a "cold" request (best of 3, each
right after the verdict generation was bumped, as any scan result anywhere does: the revision summary is
computed afresh; the commit's file list stays cached) and a warm one (best of 3), with bytes and the
large/small ratio of the warm times. Also times pushes of `--push-sizes` files (one new folder each).
All measured in the same run; asserts nothing.

Run from the repository root:
`.venv/bin/python -m bench.large_folder [--files 100000 --small 1000 --push-sizes 10000,30000]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy

from bench.git_clone import git_env, run
from tests.conftest import BastionServer, hf_api

REPEAT = 3


def fast_import(files: int) -> bytes:
    out = [b"commit refs/heads/main\n", b"committer Bench <bench@example.com> 1700000000 +0000\n",
           b"data 6\nfiles\nfrom refs/heads/main^0\n"]
    for i in range(files):
        content = f"file {i}\n".encode()
        out.append(f"M 100644 inline data/f{i:06d}.txt\ndata {len(content)}\n".encode() + content + b"\n")
    return b"".join(out)


def push_folder(server: BastionServer, token: str, owner: str, files: int, work: Path, env: dict[str, str]) -> str:
    repo_id = f"{owner}/folder-{files}"
    hf_api(server, token).create_repo(repo_id)
    clone = work / f"clone-{files}"
    host = server.url.removeprefix("http://")
    run(["git", "clone", "-q", f"http://{owner}:{token}@{host}/{repo_id}", str(clone)], env)
    # On top of the initial commit (.gitattributes); the work tree is never checked out.
    run(["git", "fast-import", "--quiet"], env, cwd=clone, data=fast_import(files))
    run(["git", "push", "-q", "origin", "main"], env, cwd=clone)
    return repo_id


def timed_get(url: str, headers: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    resp = httpx.get(url, headers=headers, timeout=600)
    elapsed = time.perf_counter() - t0
    resp.raise_for_status()
    return elapsed, len(resp.content)


def measure(url: str, headers: dict[str, str], invalidate: Callable[[], None]) -> tuple[float, float, float, int]:
    """(first, cold, warm, bytes): see the module's docstring."""
    first, size = timed_get(url, headers)
    cold = float("inf")
    for _ in range(REPEAT):
        invalidate()
        cold = min(cold, timed_get(url, headers)[0])
    warm = min(timed_get(url, headers)[0] for _ in range(REPEAT))
    return first, cold, warm, size


def bump_generation(server: BastionServer) -> Callable[[], None]:
    """What any verdict, job or notice write does (bastion.scanning.generation): cached summaries lapse."""
    engine = sqlalchemy.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")

    def bump() -> None:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("UPDATE scan_generation SET generation = generation + 1"))
    return bump


def routes(server: BastionServer, repo_id: str) -> dict[str, tuple[str, dict[str, str]]]:
    html = {"accept": "text/html"}
    return {
        "web folder page": (f"{server.url}/{repo_id}/tree/main/data", html),
        "web repo page": (f"{server.url}/{repo_id}", html),
        "scan status API": (f"{server.url}/api/models/{repo_id}/scan", {}),
        "tree API": (f"{server.url}/api/models/{repo_id}/tree/main/data", {}),
        "tree API, last page": (f"{server.url}/api/models/{repo_id}/tree/main/data?cursor=LAST", {}),
        "model info + securityStatus": (f"{server.url}/api/models/{repo_id}?securityStatus=true", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--push-sizes", default="10000,30000",
                        help="also time pushes of these many files (comma-separated; empty: none)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (for profiling)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        env = git_env(work / "home")
        pushes = [int(n) for n in args.push_sizes.split(",") if n.strip()]
        server = BastionServer(work / "data", env={
            "BASTION_MAX_TREE_ENTRIES": str(max([args.files, *pushes]) + 10), "BASTION_SCANNERS": '["pickle"]',
            "BASTION_EMBEDDED_WORKERS": "0"})  # no scans running meanwhile: every file stays `unscanned`
        server.start()
        try:
            owner, token = server.create_user()
            sizes = {"large": args.files, "small": args.small}
            repos = {}
            for label, files in [*sizes.items(), *((f"push-{n}", n) for n in pushes)]:
                t0 = time.perf_counter()
                repo_id = push_folder(server, token, owner, files, work, env)
                print(f"push of {files} files: {time.perf_counter() - t0:.1f} s", flush=True)
                if label in sizes:
                    repos[label] = repo_id
            invalidate = bump_generation(server)
            results: dict[str, dict[str, tuple[float, float, float, int]]] = {}
            for label, repo_id in repos.items():
                for name, (url, headers) in routes(server, repo_id).items():
                    url = url.replace("LAST", str(max(0, sizes[label] - 1000)))
                    results.setdefault(name, {})[label] = measure(url, headers, invalidate)
            print(f"\n{'route':30} {'first s':>8} {'cold s':>7} {'warm s':>7} {'KB':>7}   {'small: warm s':>13} "
                  f"{'KB':>6} {'ratio':>6}")
            for name, by in results.items():
                (lf, lc, lw, lb), (_sf, _sc, sw, sb) = by["large"], by["small"]
                print(f"{name:30} {lf:8.3f} {lc:7.3f} {lw:7.3f} {lb / 1000:7.1f}   {sw:13.3f} {sb / 1000:6.1f} "
                      f"{lw / sw:6.1f}")
            print(f"\n{args.files} (large) vs {args.small} (small) files in one folder; cold and warm: best of "
                  f"{REPEAT}; ratio: large/small, warm; pid {os.getpid()}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
