"""What a commit's trees may hold: entries per folder, entries in all, names that collide on checkout.

One function, `tree_problems`, judges a commit's new tree against its first parent's; the commit API
and git pushes both call it. Only the folders the commit changes are read (plus every tree's entry
count, which is cached by tree id: a tree's content never changes, so an unchanged subtree is
counted once per process). A rule is broken only by growth: a folder already over a lowered limit,
or a collision allowed earlier, does not block an unrelated change to it.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import pygit2

from bastion.config import Settings
from bastion.repos.models import Repo
from bastion.storage.gitstore import GitRepo

CASE_SETTING = "allow_case_colliding_paths"  # repos.settings key of allowCaseCollidingPaths


@dataclass(frozen=True)
class TreeLimits:
    max_entries: int  # entries (files and folders) directly in one folder
    max_total: int  # entries in the whole tree, every level counted
    allow_case_collisions: bool  # the repo setting allowCaseCollidingPaths

    @classmethod
    def of(cls, settings: Settings, repo: Repo) -> TreeLimits:
        return cls(settings.max_tree_entries, settings.max_total_tree_entries,
                   bool((repo.settings or {}).get(CASE_SETTING)))


def checkout_name(name: str) -> str:
    """The name as a case-insensitive, normalizing file system (macOS, Windows) sees it."""
    return unicodedata.normalize("NFC", name).casefold()


class _TotalCounts:
    """Tree id -> entries below it (all levels): bounded, shared by every repository (ids are content)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._counts: OrderedDict[pygit2.Oid, int] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def total(self, repo: pygit2.Repository, tree_id: pygit2.Oid) -> int:
        # Iterative (a path may nest hundreds of folders deep): a tree is summed once its subtrees are.
        known: dict[pygit2.Oid, int] = {}

        def lookup(oid: pygit2.Oid) -> int | None:
            if oid not in known:
                cached = self._get(oid)
                if cached is None:
                    return None
                known[oid] = cached  # held for this sum even if the cache evicts it meanwhile
            return known[oid]

        stack: list[pygit2.Oid] = [tree_id]
        while stack:
            oid = stack[-1]
            if lookup(oid) is not None:
                stack.pop()
                continue
            tree = repo[oid]
            subtrees = [entry.id for entry in tree if entry.type_str == "tree"]
            missing = [sub for sub in subtrees if lookup(sub) is None]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            known[oid] = len(tree) + sum(known[sub] for sub in subtrees)
            self._put(oid, known[oid])
        return known[tree_id]

    def _get(self, oid: pygit2.Oid) -> int | None:
        with self._lock:
            count = self._counts.get(oid)
            if count is not None:
                self._counts.move_to_end(oid)
            return count

    def _put(self, oid: pygit2.Oid, count: int) -> None:
        with self._lock:
            self._counts[oid] = count
            if len(self._counts) > self._capacity:
                self._counts.popitem(last=False)


total_counts = _TotalCounts()


def _folder(repo: pygit2.Repository, root: pygit2.Tree | None, path: str) -> pygit2.Tree | None:
    if root is None:
        return None
    if not path:
        return root
    try:
        obj = root[path]
    except KeyError:
        return None
    return repo[obj.id] if obj.type_str == "tree" else None


def _folders_of(paths: Iterable[str]) -> set[str]:
    """Every folder a changed path passes through, the root ("") included."""
    folders = {""}
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
    return folders


def _shown(folder: str) -> str:
    return f"folder {folder}/" if folder else "the repository's top folder"


def tree_problems(git: GitRepo, tree: pygit2.Tree, parent: pygit2.Tree | None, changed: Iterable[str],
                  limits: TreeLimits) -> list[str]:
    """Why `tree` (a commit's tree, whose first parent has `parent`) may not be committed; [] if it may.

    `changed`: the paths of the files the commit adds or changes (deletions cannot break a rule).
    """
    repo = git.repo
    problems: list[str] = []
    for folder in sorted(_folders_of(changed)):
        now = _folder(repo, tree, folder)
        if now is None:
            continue
        before = _folder(repo, parent, folder)
        if before is not None and before.id == now.id:
            continue
        size = len(now)
        if size > limits.max_entries and size > (len(before) if before is not None else 0):
            problems.append(f"{_shown(folder)} would hold {size} entries; the limit is {limits.max_entries} "
                            "(BASTION_MAX_TREE_ENTRIES): spread the files over subfolders")
        if not limits.allow_case_collisions:
            problems += _collisions(folder, now, before)
    total = total_counts.total(repo, tree.id)
    if total > limits.max_total and total > (total_counts.total(repo, parent.id) if parent is not None else 0):
        problems.append(f"this commit's tree would hold {total} entries in all; the limit is {limits.max_total} "
                        "(BASTION_MAX_TOTAL_TREE_ENTRIES)")
    return problems


def _collisions(folder: str, now: pygit2.Tree, before: pygit2.Tree | None) -> list[str]:
    """Names in `now` that one checkout would write to the same file, at least one of them new."""
    groups: dict[str, list[str]] = {}
    for entry in now:
        groups.setdefault(checkout_name(entry.name), []).append(entry.name)
    clashing = [names for names in groups.values() if len(names) > 1]
    if not clashing:
        return []
    old = {entry.name for entry in before} if before is not None else set()
    prefix = f"{folder}/" if folder else ""
    out = []
    for names in clashing:
        if all(name in old for name in names):
            continue  # the collision predates this commit (allowed then); it is not this commit's doing
        shown = ", ".join(repr(prefix + name) for name in sorted(names))
        out.append(f"{shown} differ only in case: they would be one file on a case-insensitive file system "
                   "(macOS, Windows); rename one, or allow it with the repo setting allowCaseCollidingPaths")
    return out
