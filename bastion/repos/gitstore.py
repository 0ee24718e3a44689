"""Bare git repositories through pygit2: resolve revisions, read trees, write commits, move refs.

No working trees and no subprocess per file. Refs move only by compare-and-swap
(libgit2 checks the old value under the ref's lock file), and commit writers of one repo are
serialised by an flock on the repository directory so they see each other's heads.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pygit2

from bastion.errors import BadRequest, Conflict, EntryNotFound, RevisionNotFound

DEFAULT_BRANCH = "main"
LFS_POINTER_MAX = 200
LFS_VERSION = b"version https://git-lfs.github.com/spec/v1"
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
PR_REF_RE = re.compile(r"^refs/pr/([1-9][0-9]{0,8})$")
MODE_FILE = pygit2.GIT_FILEMODE_BLOB
MODE_TREE = pygit2.GIT_FILEMODE_TREE

DEFAULT_GITATTRIBUTES = (Path(__file__).parent / "default.gitattributes").read_bytes()


@dataclass(frozen=True)
class LfsPointer:
    oid: str
    size: int
    pointer_size: int


def lfs_pointer_bytes(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def parse_lfs_pointer(data: bytes) -> LfsPointer | None:
    if len(data) > LFS_POINTER_MAX or not data.startswith(LFS_VERSION):
        return None
    oid = size = None
    for line in data.decode("ascii", "replace").splitlines()[1:]:
        key, _, value = line.partition(" ")
        if key == "oid" and value.startswith("sha256:"):
            oid = value[7:]
        elif key == "size" and value.isdigit():
            size = int(value)
    if oid is None or size is None or not re.fullmatch(r"[0-9a-f]{64}", oid):
        return None
    return LfsPointer(oid, size, len(data))


def validate_path(path: str) -> str:
    """A repository file path as the Hub accepts it; anything else is a 400, never a write."""
    if not isinstance(path, str) or not path:
        raise BadRequest("Invalid path: empty")
    if "\x00" in path or "\\" in path or any(ord(c) < 0x20 for c in path):
        raise BadRequest(f"Invalid path {path!r}: control characters or backslashes are not allowed")
    if path.startswith("/"):
        raise BadRequest(f"Invalid path {path!r}: must be relative (no leading '/')")
    if len(path.encode()) > 1024:
        raise BadRequest("Invalid path: longer than 1024 bytes")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise BadRequest(f"Invalid path {path!r}: empty, '.' or '..' components are not allowed")
        if part.lower() == ".git":
            raise BadRequest(f"Invalid path {path!r}: '.git' components are not allowed")
        if len(part.encode()) > 255:
            raise BadRequest(f"Invalid path {path!r}: a component is longer than 255 bytes")
    return path


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._repo: pygit2.Repository | None = None

    @property
    def repo(self) -> pygit2.Repository:
        if self._repo is None:
            self._repo = pygit2.Repository(str(self.path))
        return self._repo

    # ---- creation --------------------------------------------------------------------------
    @classmethod
    def init(cls, path: Path, author: pygit2.Signature, sign: Callable[[str], str] | None = None) -> GitRepo:
        """A bare repo whose main branch holds one commit with the default .gitattributes.

        `sign` turns the commit's text into its gpgsig header (the caller's signer: this module
        knows nothing of keys); None writes the commit unsigned.
        """
        repo = pygit2.init_repository(str(path), bare=True, initial_head=DEFAULT_BRANCH)
        # Ref updates must be visible to other processes at once; no packed-refs surprises.
        repo.config["core.logAllRefUpdates"] = True
        repo.config["receive.denyNonFastForwards"] = False
        blob = repo.create_blob(DEFAULT_GITATTRIBUTES)
        tb = repo.TreeBuilder()
        tb.insert(".gitattributes", blob, MODE_FILE)
        tree = tb.write()
        if sign is None:
            repo.create_commit(f"refs/heads/{DEFAULT_BRANCH}", author, author, "initial commit", tree, [])
        else:
            content = repo.create_commit_string(author, author, "initial commit", tree, [])
            oid = repo.create_commit_with_signature(content, sign(content))
            repo.references.create(f"refs/heads/{DEFAULT_BRANCH}", oid)
        return cls(path)

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        fd = os.open(self.path / "bastion.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ---- revisions ---------------------------------------------------------------------------
    def branch_head(self, branch: str) -> pygit2.Oid | None:
        ref = self.repo.references.get(branch if branch.startswith("refs/") else f"refs/heads/{branch}")
        return ref.target if ref is not None else None

    def branch_ref_name(self, revision: str) -> str:
        """The ref a commit to `revision` moves: a branch or a pull-request ref."""
        if PR_REF_RE.match(revision):
            return revision
        name = revision.removeprefix("refs/heads/")
        self.validate_ref_name(name)
        return f"refs/heads/{name}"

    def resolve(self, revision: str) -> pygit2.Commit:
        """Branch, tag, refs/pr/N, full ref name, or commit sha → commit. RevisionNotFound if none."""
        repo = self.repo
        candidates = []
        if revision.startswith("refs/"):
            candidates.append(revision)
        else:
            candidates += [f"refs/heads/{revision}", f"refs/tags/{revision}"]
        for name in candidates:
            try:
                ref = repo.references.get(name)
            except (pygit2.InvalidSpecError, ValueError):
                ref = None
            if ref is not None:
                obj = ref.peel(pygit2.Commit)
                return obj
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            try:
                obj = repo.revparse_single(revision)
            except (KeyError, ValueError, pygit2.GitError):
                obj = None
            if isinstance(obj, pygit2.Commit):
                return obj
        raise RevisionNotFound(f"Invalid rev id: {revision}")

    @staticmethod
    def validate_ref_name(name: str) -> None:
        if (not name or len(name) > 200 or not pygit2.reference_is_valid_name(f"refs/heads/{name}")
                or name.startswith("refs/") or SHA_RE.match(name)):
            raise BadRequest(f"Invalid reference name {name!r}")

    def refs(self, prefix: str) -> list[tuple[str, str]]:
        out = []
        for name in self.repo.references:
            if name.startswith(prefix):
                ref = self.repo.references[name]
                out.append((name, str(ref.peel(pygit2.Commit).id)))
        return sorted(out)

    # ---- reading -----------------------------------------------------------------------------
    def tree_at(self, commit: pygit2.Commit, path: str) -> pygit2.Object:
        tree = commit.tree
        if not path:
            return tree
        try:
            entry = tree[path]
        except KeyError:
            raise EntryNotFound(f"{path} does not exist at {commit.id}",
                                headers={"X-Repo-Commit": str(commit.id)}) from None
        return self.repo[entry.id]

    def blob_at(self, commit: pygit2.Commit, path: str) -> pygit2.Blob:
        try:
            entry = commit.tree[path]
        except (KeyError, ValueError):
            entry = None
        if entry is None or entry.type_str != "blob":
            raise EntryNotFound(f"Entry not found: {path} does not exist at this revision",
                                headers={"X-Repo-Commit": str(commit.id)})
        return self.repo[entry.id]

    def walk_files(self, tree: pygit2.Tree, base: str = "") -> Iterator[tuple[str, pygit2.Object]]:
        for entry in tree:
            path = f"{base}{entry.name}"
            if entry.type_str == "tree":
                yield from self.walk_files(self.repo[entry.id], path + "/")
            else:
                yield path, entry

    # ---- writing -----------------------------------------------------------------------------
    def write_tree(self, base: pygit2.Tree | None, changes: dict[str, object]) -> pygit2.Oid | None:
        """Apply nested `changes` ({name: Oid (blob) | None (delete) | dict (subtree)}) to `base`."""
        repo = self.repo
        tb = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
        for name, change in changes.items():
            existing = base[name] if base is not None and name in base else None
            if isinstance(change, dict):
                if existing is not None and existing.type_str != "tree":
                    raise BadRequest(f"Cannot create folder {name!r}: a file with this name exists")
                sub = self.write_tree(repo[existing.id] if existing is not None else None, change)
                if sub is None:
                    if existing is not None:
                        tb.remove(name)
                else:
                    tb.insert(name, sub, MODE_TREE)
            elif change is None:
                if existing is not None:
                    tb.remove(name)
            else:
                if existing is not None and existing.type_str == "tree":
                    raise BadRequest(f"Cannot write file {name!r}: a folder with this name exists")
                tb.insert(name, change, MODE_FILE)
        if len(tb) == 0:
            return None
        return tb.write()

    def create_commit(self, tree: pygit2.Oid, parents: list[pygit2.Oid], author: pygit2.Signature,
                      message: str) -> pygit2.Oid:
        return self.repo.create_commit(None, author, author, message, tree, parents)

    def compare_and_swap(self, ref_name: str, expected: pygit2.Oid | None, new: pygit2.Oid) -> None:
        """Move `ref_name` from `expected` to `new`; Conflict if it moved meanwhile."""
        repo = self.repo
        try:
            if expected is None:
                repo.references.create(ref_name, new, force=False)
            else:
                ref = repo.references.get(ref_name)
                if ref is None or ref.target != expected:
                    raise Conflict(f"{ref_name} has moved; retry on the new head")
                ref.set_target(new)
        except (pygit2.GitError, pygit2.AlreadyExistsError, ValueError) as exc:
            raise Conflict(f"{ref_name} has moved concurrently; retry on the new head ({exc})") from None

    def delete_ref(self, ref_name: str, expected: pygit2.Oid | None = None) -> None:
        ref = self.repo.references.get(ref_name)
        if ref is None:
            raise RevisionNotFound(f"Invalid rev id: {ref_name}")
        if expected is not None and ref.target != expected:
            raise Conflict(f"{ref_name} has moved")
        ref.delete()


def signature(name: str, email: str, when: datetime | None = None) -> pygit2.Signature:
    when = when or datetime.now(UTC)
    offset = int((when.utcoffset() or timedelta(0)).total_seconds() // 60)
    return pygit2.Signature(name, email, int(when.timestamp()), offset)


def commit_datetime(commit: pygit2.Commit) -> datetime:
    tz = timezone(timedelta(minutes=commit.committer.offset))
    return datetime.fromtimestamp(commit.committer.time, tz).astimezone(UTC)
