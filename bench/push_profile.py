"""Profile the server's side of a git push of one folder of N new files, in this process.

Builds the repo through a real `bastion serve` (user, repo, initial commit), stops it, then copies a
fast-imported commit of N files into the bare repository without a ref (as receive-pack's quarantine
holds it) and runs what the push hooks run: `scan_push`, `judge_push` (pre-receive), `apply_push`
with the post-commit hooks (proc-receive). Prints each phase's seconds; `--profile` also prints a
pyinstrument profile (pyinstrument is not a dependency: install it to use that flag).

Run from the repository root: `.venv/bin/python -m bench.push_profile [--files 30000] [--profile]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.git_clone import git_env, run
from bench.large_folder import fast_import
from tests.conftest import BastionServer, hf_api

ENV = {"BASTION_SCANNERS": '["pickle"]', "BASTION_EMBEDDED_WORKERS": "0"}


@contextmanager
def phase(name: str, times: dict[str, float]):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    yield
    times[name] = time.perf_counter() - t0


def push_in_process(data_dir: Path, repo_id: str, clone: Path, env: dict[str, str], files: int) -> dict[str, float]:
    from bastion.app import create_app
    from bastion.config import Settings
    from bastion.db import transaction
    from bastion.gitserver import service
    from bastion.hub import Hub
    from bastion.repos.models import Repo

    settings = Settings(data_dir=data_dir, max_tree_entries=files + 10, scanners=["pickle"])
    hub = Hub.open(settings)
    create_app(settings, hub)  # the post-commit hooks, scan queue and mailer, wired as `bastion serve` does
    times: dict[str, float] = {}
    try:
        with transaction(hub.sessions) as session:
            ns, name = repo_id.split("/")
            repo = next(r for r in session.query(Repo).all() if r.namespace == ns and r.name == name)
            session.expunge(repo)
        git = hub.git(repo.storage_key)
        # The pushed objects, unreferenced (as in the quarantine).
        run(["git", "fetch", "-q", str(clone), "main:refs/bench/incoming"], env, cwd=git.path)
        new = git.repo.references["refs/bench/incoming"].target
        git.repo.references.delete("refs/bench/incoming")
        old = git.repo.references["refs/heads/main"].target
        updates = [service.RefUpdate(str(old), str(new), "refs/heads/main")]
        with phase("scan_push", times):
            scan = service.scan_push(hub, repo, git, updates)
        with phase("judge_push", times), transaction(hub.sessions) as session:
            result = service.judge_push(session, repo, repo.owner_user_id or 0, scan)
        if not result.ok:
            raise SystemExit("\n".join(result.messages))
        with phase("apply_push", times), transaction(hub.sessions) as session:
            locked = session.get(Repo, repo.id)
            results = service.apply_push(hub, session, locked, updates, False, set(updates), scan.changed_blobs)
        assert all(r.ok for r in results), results
    finally:
        hub.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=30_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = git_env(work / "home")
        server = BastionServer(work / "data", env=ENV)
        server.start()
        try:
            owner, token = server.create_user()
            repo_id = f"{owner}/folder-{args.files}"
            hf_api(server, token).create_repo(repo_id)
            clone = work / "clone"
            run(["git", "clone", "-q", f"http://{owner}:{token}@{server.url.removeprefix('http://')}/{repo_id}",
                 str(clone)], env)
        finally:
            server.stop()
        run(["git", "fast-import", "--quiet"], env, cwd=clone, data=fast_import(args.files))
        for key, value in {**server.env, **ENV}.items():
            if key.startswith("BASTION_"):
                os.environ[key] = value
        profiler: Any = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        times = push_in_process(work / "data", repo_id, clone, env, args.files)
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        print(f"{args.files} files: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
              + f", total {sum(times.values()):.2f} s", flush=True)


if __name__ == "__main__":
    main()
