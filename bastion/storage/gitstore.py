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
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pygit2

from bastion.errors import BadRequest, Conflict, EntryNotFound, RevisionNotFound, UnprocessableEntity

DEFAULT_BRANCH = "main"
# Left in a repository's folder when it moved to another storage region (bastion.relocation): a writer
# that took the folder's lock after the move is told to retry; the folder is deleted soon after.
MOVED_MARKER = "bastion-moved"
LFS_POINTER_MAX = 200
LFS_VERSION = b"version https://git-lfs.github.com/spec/v1"
# The shortest text parse_lfs_pointer accepts (version, oid and size lines): a smaller blob is no pointer.
LFS_POINTER_MIN = len(LFS_VERSION) + len("\noid sha256:") + 64 + len("\nsize 0")
SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")
PR_REF_RE = re.compile(r"^refs/pr/([1-9][0-9]{0,8})\Z")
PSEUDO_REF_RE = re.compile(r"[A-Z_]+_HEAD")  # FETCH_HEAD, ORIG_HEAD, MERGE_HEAD, ...: git's root refs
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


# Characters no file or ref name may hold: C0 controls, DEL and C1 controls (terminals act on
# them), and Unicode's bidirectional controls, which make `invoice_\u202etxt.exe` read "invoice_exe.txt".
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def unsafe_characters(name: str) -> str | None:
    """Why `name` may not be a file or ref name because of a character in it, or None."""
    if _CONTROL.search(name):
        return "control characters (U+0000-U+001F, DEL, U+0080-U+009F) are not allowed"
    if _BIDI.search(name):
        return "bidirectional text controls (such as U+202E) are not allowed: they disguise names"
    return None


# The names git itself refuses for a path component (read-cache.c verify_path, path.c is_ntfs_dotgit,
# utf8.c is_hfs_dotgit): a checkout on Windows or macOS would write into the repository's .git.
# NTFS drops trailing dots and spaces, reads `name:stream` as `name`, and gives `.git` the short
# name `git~1`; HFS+ ignores some invisible code points; both ignore case (ASCII letters only).
_NTFS_DOTGIT = re.compile(r"(?:\.git|git~1)[. ]*(?::.*)?", re.ASCII | re.IGNORECASE | re.DOTALL)
_HFS_IGNORED = dict.fromkeys([0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070),
                              0xFEFF])


def _ntfs_alias(name: str, short_prefix: str) -> re.Pattern[str]:
    """`.name` as NTFS reads it (git's is_ntfs_dot_generic): its short names `namexx~1`..`~4` and
    the fall-back short names built from `short_prefix` (`gi7eba~1`, `gi7eb~12`, ...)."""
    fallback = "|".join(f"{re.escape(short_prefix[:k])}~[1-9][0-9]{{{6 - k}}}" for k in range(7))
    return re.compile(rf"(?:\.{re.escape(name)}|{re.escape(name[:6])}~[1-4]|{fallback})[. ]*(?::.*)?",
                      re.ASCII | re.IGNORECASE | re.DOTALL)


# Files git refuses to follow as symbolic links (fsck: gitmodulesSymlink, gitattributesSymlink, ...).
_SYMLINK_REFUSED = {f".{name}": _ntfs_alias(name, short) for name, short in (
    ("gitmodules", "gi7eba"), ("gitattributes", "gi7d29"), ("gitignore", "gi250a"), ("mailmap", "maba30"))}


def _hfs_name(part: str) -> str | None:
    """`part` as HFS+ compares it to an ASCII name (ignorable code points dropped), or None."""
    folded = part.translate(_HFS_IGNORED)
    return folded.lower() if folded.isascii() else None


def validate_path(path: str, *, symlink: bool = False) -> str:
    """A repository file path as the Hub accepts it; anything else is a 400, never a write.

    `symlink`: the path is a symbolic link (only pushes carry them).
    """
    if not isinstance(path, str) or not path:
        raise BadRequest("Invalid path: empty")
    if reason := unsafe_characters(path):
        raise BadRequest(f"Invalid path {path!r}: {reason}")
    if any(part in (".", "..") for part in re.split(r"[/\\]", path)):
        # A relative path (`../x`, `..\\x` as Windows reads it) climbs out of the repo: the Hub's 422.
        raise UnprocessableEntity(f"Invalid path {path!r}: '.' or '..' components are not allowed")
    if "\\" in path:
        raise BadRequest(f"Invalid path {path!r}: backslashes are not allowed")
    if path.startswith("/"):
        raise BadRequest(f"Invalid path {path!r}: must be relative (no leading '/')")
    if len(path.encode()) > 1024:
        raise BadRequest("Invalid path: longer than 1024 bytes")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise BadRequest(f"Invalid path {path!r}: empty, '.' or '..' components are not allowed")
        if _NTFS_DOTGIT.fullmatch(part) or _hfs_name(part) == ".git":
            raise BadRequest(f"Invalid path {path!r}: {part!r} is git's own '.git' directory (as Windows or "
                             "macOS read names), so it is not allowed")
        if len(part.encode()) > 255:
            raise BadRequest(f"Invalid path {path!r}: a component is longer than 255 bytes")
    if symlink:
        for name, ntfs in _SYMLINK_REFUSED.items():
            if ntfs.fullmatch(parts[-1]) or _hfs_name(parts[-1]) == name:
                raise BadRequest(f"Invalid path {path!r}: {name} may not be a symbolic link (git will not follow one)")
    return path


# Object directories to read beside a repository's own, by repository path: a push's quarantine while
# its pre-receive checks run (`objects_visible`). Every GitRepo opened in that context sees them, so the
# post-commit hooks judge quarantined objects through the same `hub.git(...)` they always use.
_extra_objects: ContextVar[dict[str, tuple[str, ...]] | None] = ContextVar("bastion_git_extra_objects", default=None)


@contextmanager
def objects_visible(git_dir: Path, objects: Path) -> Iterator[None]:
    """Within this context (this thread and the work it hands on with its context), every GitRepo of
    `git_dir` reads the objects in `objects` too (an alternate object directory; nothing is copied)."""
    key = str(Path(git_dir).resolve())
    current = _extra_objects.get() or {}
    token = _extra_objects.set({**current, key: (*current.get(key, ()), str(objects))})
    try:
        yield
    finally:
        _extra_objects.reset(token)


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._repo: pygit2.Repository | None = None

    @property
    def repo(self) -> pygit2.Repository:
        if self._repo is None:
            repo = pygit2.Repository(str(self.path))
            extra = _extra_objects.get()
            for objects in extra.get(str(Path(self.path).resolve()), ()) if extra else ():
                repo.odb.add_disk_alternate(objects)
            self._repo = repo
        return self._repo

    # ---- creation --------------------------------------------------------------------------
    @classmethod
    def init(cls, path: Path, author: pygit2.Signature, sign: Callable[[str], str] | None = None,
             files: dict[str, bytes] | None = None) -> GitRepo:
        """A bare repo whose main branch holds one commit with the default .gitattributes (and `files`,
        top-level names: a Space's README).

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
        for name, content in sorted((files or {}).items()):
            tb.insert(name, repo.create_blob(content), MODE_FILE)
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
        moved = Conflict("This repository was moved to another storage region while the request ran; retry")
        try:
            fd = os.open(self.path / "bastion.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise moved from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if (self.path / MOVED_MARKER).exists():
                raise moved
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
        """A branch or tag name (short, without refs/heads/ or refs/tags/): git's check-ref-format plus
        what `git branch` and `git tag` refuse, and characters that disguise a name."""
        if reason := unsafe_characters(name):
            raise BadRequest(f"Invalid reference name {name!r}: {reason}")
        if name.upper() == "HEAD" or PSEUDO_REF_RE.fullmatch(name):
            # A branch HEAD becomes the client's refs/remotes/origin/HEAD, the remote's default-branch
            # symref; `head` is HEAD on a case-insensitive file system.
            raise BadRequest(f"Invalid reference name {name!r}: HEAD and *_HEAD names are git's own refs")
        if name.startswith("-"):
            raise BadRequest(f"Invalid reference name {name!r}: a name may not start with '-' (it reads as a "
                             "command-line option)")
        if (not name or len(name) > 200 or not pygit2.reference_is_valid_name(f"refs/heads/{name}")
                or name.startswith("refs/") or SHA_RE.match(name)):
            raise BadRequest(f"Invalid reference name {name!r}")

    def ref_names(self, prefix: str) -> list[str]:
        """The names of the refs under `prefix` ("refs/heads/", "refs/tags/"), without it."""
        return [name.removeprefix(prefix) for name in self.repo.references if name.startswith(prefix)]

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
