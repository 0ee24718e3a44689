"""Preupload: the server decides, per file, between inline ("regular") and LFS storage.

LFS when .gitattributes says so, when the sample looks binary, when the file is large, or when the
regular files asked about together would not fit in one commit's body; `shouldIgnore` follows the
repo's .gitignore (and one the client sends).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import pathspec
import pygit2

from bastion.errors import BadRequest
from bastion.storage.gitstore import GitRepo, parse_lfs_pointer, validate_path

MAX_PREUPLOAD_FILES = 1000


@dataclass(frozen=True)
class RepoRules:
    lfs: pathspec.PathSpec
    ignore: pathspec.PathSpec


def _read_text(git: GitRepo, commit: pygit2.Commit | None, path: str) -> str:
    if commit is None:
        return ""
    try:
        entry = commit.tree[path]
    except KeyError:
        return ""
    blob = git.repo[entry.id]
    return blob.data[:1_000_000].decode("utf-8", "replace") if isinstance(blob, pygit2.Blob) else ""


def rules_at(git: GitRepo, commit: pygit2.Commit | None, extra_gitignore: str | None) -> RepoRules:
    lfs_patterns = []
    for line in _read_text(git, commit, ".gitattributes").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            lfs_patterns.append(fields[0])
    ignore_text = _read_text(git, commit, ".gitignore") + "\n" + (extra_gitignore or "")
    return RepoRules(pathspec.GitIgnoreSpec.from_lines(lfs_patterns),
                     pathspec.GitIgnoreSpec.from_lines(ignore_text.splitlines()))


def whole_sample(item: dict[str, Any]) -> bytes | None:
    """The file's content when its preupload sample is all of it (the client sends the first 512 bytes)."""
    try:
        sample = base64.b64decode(item.get("sample") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    return sample if item.get("size") == len(sample) else None


def decide(git: GitRepo, commit: pygit2.Commit | None, files: object, gitignore: str | None,
           lfs_threshold: int, max_commit_body: int) -> list[dict[str, Any]]:
    if not isinstance(files, list) or len(files) > MAX_PREUPLOAD_FILES:
        raise BadRequest(f"'files' must be a list of at most {MAX_PREUPLOAD_FILES} entries")
    rules = rules_at(git, commit, gitignore)
    # Regular files travel base64-encoded (4/3 of their size) inside the commit's body, which is read
    # whole and is bounded (BASTION_MAX_COMMIT_BODY). Files asked about together are committed together,
    # so once their regular bytes would fill half the body the rest go to LFS: the client then streams
    # them to the LFS store, where size is no burden, and the commit it sends fits (the Hub's client
    # follows `uploadMode` per file; many 9 MiB text files in one commit must not meet a 413).
    regular_budget = max_commit_body // 2 * 3 // 4
    out = []
    for item in files:
        if not isinstance(item, dict):
            raise BadRequest("Each file must be an object with 'path', 'sample' and 'size'")
        path = validate_path(item.get("path"))  # type: ignore[arg-type]
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"Invalid size for {path!r}")
        try:
            sample = base64.b64decode(item.get("sample") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise BadRequest(f"Invalid base64 sample for {path!r}") from None
        if size == 0:
            mode = "regular"
        elif size > lfs_threshold or rules.lfs.match_file(path) or b"\x00" in sample[:512] or \
                size > regular_budget:
            mode = "lfs"
        else:
            mode = "regular"
            regular_budget -= size
        out.append({"path": path, "uploadMode": mode, "shouldIgnore": rules.ignore.match_file(path),
                    "oid": _remote_oid(git, commit, path)})
    return out


def _remote_oid(git: GitRepo, commit: pygit2.Commit | None, path: str) -> str | None:
    """The current oid of `path`: sha256 for LFS files, git blob sha1 otherwise (no-op detection)."""
    if commit is None:
        return None
    try:
        entry = commit.tree[path]
    except KeyError:
        return None
    if entry.type_str != "blob":
        return None
    blob = git.repo[entry.id]
    ptr = parse_lfs_pointer(blob.data) if blob.size <= 200 else None
    return ptr.oid if ptr else str(entry.id)
