"""Pushes under failure and contention: a server killed (SIGKILL) in the middle of a push leaves the
repository exactly as it was and the same push then succeeds; racing pushes never corrupt a branch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import BastionServer, hf_api, wait_for
from tests.gitserver.conftest import Git, RepoHandle, make_repo

MiB = 1024 * 1024


class ThrottledProxy:
    """A loopback TCP proxy that slows client→server bytes, so a push is reliably still in flight."""

    def __init__(self, upstream_port: int, bytes_per_second: int) -> None:
        self.upstream_port = upstream_port
        self.rate = bytes_per_second
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                # The server is gone (killed): refuse this client at once. Leaving its socket open made
                # a retrying git wait forever.
                client.close()
                continue
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        piece = 64 * 1024
        try:
            while data := src.recv(piece):
                dst.sendall(data)
                if throttle:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Reset every connection. A plain close() from this thread neither wakes a pump blocked in recv()
        nor sends anything to the peer, so the client could wait on a dead connection forever."""
        self.closed = True
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _process_tree(pid: int) -> set[int]:
    found, stack = set(), [pid]
    while stack:
        p = stack.pop()
        found.add(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _sigkill_tree(server: BastionServer) -> None:
    """SIGKILL the server with all its workers and git children at once, as a crash would.

    The tree is frozen first (SIGSTOP) until no new process appears, so nothing spawned in
    between survives the kill and finishes the push on its own.
    """
    assert server.proc is not None
    pids: set[int] = set()
    while True:
        current = _process_tree(server.proc.pid)
        for pid in current - pids:
            os.kill(pid, signal.SIGSTOP)
        if current == pids:
            break
        pids = current
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    server.proc.wait(30)

    def gone() -> bool:
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                continue
            if state != "Z":
                return False
        return True

    wait_for(gone, timeout=30)


def bare_path(server: BastionServer, repo: RepoHandle) -> Path:
    from bastion.repos.models import Repo

    namespace, name = repo.repo_id.split("/")
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            key = conn.execute(sa.select(Repo.storage_key).where(Repo.namespace == namespace,
                                                                 Repo.name == name)).scalar_one()
    finally:
        engine.dispose()
    return server.data_dir / "repos" / key[:2] / f"{key}.git"


def refs_of(git: Git, bare: Path) -> str:
    return git("for-each-ref", "--format=%(refname) %(objectname)", cwd=bare).stdout


def assert_fsck_clean(git: Git, bare: Path) -> None:
    fsck = git("fsck", "--strict", "--no-dangling", cwd=bare, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "error" not in (fsck.stdout + fsck.stderr).lower(), fsck.stdout + fsck.stderr


def test_sigkill_mid_push_leaves_the_repo_unchanged_and_the_push_then_succeeds(git: Git, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = BastionServer(data_dir).start()
    proxy: ThrottledProxy | None = None
    restarted: BastionServer | None = None
    try:
        repo = make_repo(server)
        bare = bare_path(server, repo)
        work = tmp_path / "w"
        git("clone", "-q", repo.url(), str(work))
        # Random bytes do not compress: the pack is ~40 MiB, about ten seconds through the proxy.
        for i in range(5):
            (work / f"part-{i}.txt").write_bytes(os.urandom(8 * MiB))
        pushed = git.commit_all(work, "five big parts")
        before = refs_of(git, bare)
        assert_fsck_clean(git, bare)

        proxy = ThrottledProxy(server.port, 4 * MiB)
        slow_url = f"http://{repo.owner}:{repo.token}@127.0.0.1:{proxy.port}/{repo.repo_id}"
        # As a user on a flaky link would: give up on a connection that moves nothing for 15 s.
        push = subprocess.Popen(["git", "-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=15",
                                 "push", slow_url, "main:main"], cwd=work, env=git.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def receiving() -> bool:
            # receive-pack is writing what it received into its quarantine (a pack, or loose objects
            # for a push of few objects): past a third of it, the push is in the middle.
            written = 0
            for path in (bare / "objects").glob("tmp_objdir-incoming-*/**/*"):
                try:
                    written += path.stat().st_size if path.is_file() else 0
                except FileNotFoundError:
                    continue
            return written > 14 * MiB

        wait_for(receiving, timeout=60, interval=0.05)
        _sigkill_tree(server)
        # The server is dead; drop the client's connections too, so git sees the failure now rather
        # than whenever its own retries time out.
        proxy.close()
        proxy = None
        out, err = push.communicate(timeout=60)
        assert push.returncode != 0, out + err

        # The repository is exactly as before: same refs, no corruption, the new commit absent.
        assert refs_of(git, bare) == before
        assert_fsck_clean(git, bare)
        assert git("cat-file", "-e", pushed, cwd=bare, check=False).returncode != 0

        # The killed receive-pack could not remove its quarantine. Once it is a day old, the next push
        # to the repo sweeps it.
        leftovers = list((bare / "objects").glob("tmp_objdir-incoming-*"))
        assert leftovers
        day_ago = time.time() - 25 * 3600
        for path in [p for q in leftovers for p in [q, *q.rglob("*")]]:
            os.utime(path, (day_ago, day_ago))

        restarted = BastionServer(data_dir).start()
        again = RepoHandle(restarted, repo.owner, repo.token, repo.repo_id)
        git("push", again.url(), "main:main", cwd=work)
        assert not any(q.exists() for q in leftovers)
        assert refs_of(git, bare) == f"refs/heads/main {pushed}\n"
        assert_fsck_clean(git, bare)
        api = hf_api(restarted, repo.token)
        assert api.list_repo_commits(repo.repo_id)[0].commit_id == pushed
        assert {f"part-{i}.txt" for i in range(5)} <= set(api.list_repo_files(repo.repo_id))
    finally:
        if proxy is not None:
            proxy.close()
        server.stop()
        if restarted is not None:
            restarted.stop()


def test_concurrent_pushes_to_one_branch_one_wins_the_other_is_rejected(server: BastionServer, git: Git,
                                                                        tmp_path: Path) -> None:
    repo = make_repo(server)
    bare = bare_path(server, repo)
    api = hf_api(server, repo.token)
    clones = [tmp_path / "a", tmp_path / "b"]
    for path in clones:
        git("clone", "-q", repo.url(), str(path))
    for rnd in range(4):
        heads = []
        for i, path in enumerate(clones):
            git("fetch", "-q", "origin", cwd=path)
            git("reset", "-q", "--hard", "origin/main", cwd=path)
            # A few MiB each, so both packs are in flight at the same time.
            (path / f"r{rnd}-{i}.txt").write_bytes(os.urandom(3 * MiB))
            heads.append(git.commit_all(path, f"round {rnd} from clone {i}"))
        start = threading.Barrier(2)
        results: list[subprocess.CompletedProcess[str] | None] = [None, None]

        def push(i: int) -> None:
            start.wait()
            results[i] = git("push", "origin", "main", cwd=clones[i], check=False)

        threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done = [r for r in results if r is not None]
        assert len(done) == 2
        winners = [i for i, r in enumerate(done) if r.returncode == 0]
        assert len(winners) == 1, [r.stderr for r in done]
        loser = done[1 - winners[0]]
        # Rejected as not a fast-forward: by the client (it saw the new head) or by the server's
        # compare-and-swap (both saw the old head; the second to move the ref loses).
        assert ("fetch first" in loser.stderr or "non-fast-forward" in loser.stderr), loser.stderr
        assert refs_of(git, bare) == f"refs/heads/main {heads[winners[0]]}\n"
        history = [c.commit_id for c in api.list_repo_commits(repo.repo_id)]
        assert history[0] == heads[winners[0]] and heads[1 - winners[0]] not in history
    assert_fsck_clean(git, bare)
