"""Reading a repository: tree entries, paths info, last commits, history, refs, info payloads.

Shapes are the Hub's JSON, exactly as huggingface_hub parses them.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

import pygit2

from bastion.caches import WeightedLru
from bastion.repos.models import Repo
from bastion.storage.gitstore import LFS_POINTER_MAX, LFS_POINTER_MIN, GitRepo, commit_datetime, parse_lfs_pointer

LAST_COMMIT_WALK_LIMIT = 5000

# LFS oids -> Xet file hashes, for the files that have a Xet reconstruction. Installed by the Xet
# CAS at start-up (bastion.xet.routes.install); None: no entry advertises Xet.
XetHashLookup = Callable[[Sequence[str]], dict[str, str]]
xet_hash_lookup: XetHashLookup | None = None
XET_LOOKUP_BATCH = 256


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _entry_at(tree: pygit2.Tree, path: str) -> pygit2.Object | None:
    try:
        return tree[path]
    except KeyError:
        return None


def file_entry(git: GitRepo, path: str, blob_id: pygit2.Oid) -> dict[str, Any]:
    # The size from the object's header: a listing never inflates whole files, only pointer-sized ones.
    _kind, size = git.repo.odb.read_header(blob_id)
    entry: dict[str, Any] = {"type": "file", "path": path, "size": size, "oid": str(blob_id)}
    if LFS_POINTER_MIN <= size <= LFS_POINTER_MAX:
        ptr = parse_lfs_pointer(git.repo[blob_id].data)
        if ptr is not None:
            entry["size"] = ptr.size
            entry["lfs"] = {"oid": ptr.oid, "size": ptr.size, "pointerSize": ptr.pointer_size}
    return entry


def with_xet_hashes(entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Add `xetHash` to LFS file entries Xet can serve (clients then skip the HEAD and use Xet)."""
    lookup = xet_hash_lookup
    if lookup is None:
        yield from entries
        return
    batch: list[dict[str, Any]] = []

    def flush() -> list[dict[str, Any]]:
        found = lookup([e["lfs"]["oid"] for e in batch if "lfs" in e])
        for e in batch:
            if "lfs" in e and e["lfs"]["oid"] in found:
                e["xetHash"] = found[e["lfs"]["oid"]]
        return batch

    for entry in entries:
        batch.append(entry)
        if len(batch) == XET_LOOKUP_BATCH:
            yield from flush()
            batch = []
    yield from flush()


def tree_entries(git: GitRepo, tree: pygit2.Tree, base: str, recursive: bool) -> Iterator[dict[str, Any]]:
    """Entries below `tree` (whose path is `base`), folders before their content, sorted like git."""
    return with_xet_hashes(_entry(git, path, obj) for path, obj in _walk(git, tree, base, recursive))


def tree_page(git: GitRepo, tree: pygit2.Tree, base: str, recursive: bool, offset: int, limit: int,
              ) -> tuple[list[dict[str, Any]], bool]:
    """Entries `offset` to `offset + limit` of `tree_entries`, and whether more follow.

    Entries before the page are only named, never read: a page costs one pass over the tree's names
    plus the work of its own entries, whatever the folder's size.
    """
    chosen = list(islice(_walk(git, tree, base, recursive), offset, offset + limit + 1))
    return list(with_xet_hashes(_entry(git, path, obj) for path, obj in chosen[:limit])), len(chosen) > limit


# A tree's entries in reading order, by tree id (content: never stale), up to this many entries in all.
_reading_order = WeightedLru(400_000)


def folder_page(git: GitRepo, tree: pygit2.Tree, base: str, offset: int, limit: int,
                ) -> tuple[list[dict[str, Any]], int]:
    """One page of a folder as a person reads it (folders first, then files, case-insensitively by
    name), and how many entries the folder holds. The order is computed once per tree per process."""
    ordered: list[tuple[str, bool, pygit2.Oid]] | None = _reading_order.get(tree.id)
    if ordered is None:
        items = sorted((obj.type_str != "tree", obj.name.lower(), obj.name, obj.id) for obj in tree
                       if obj.type_str in ("tree", "blob"))
        ordered = [(name, is_file, oid) for is_file, _, name, oid in items]
        _reading_order.put(tree.id, ordered, max(1, len(ordered)))
    page = [(f"{base}/{name}" if base else name, is_file, oid) for name, is_file, oid in ordered[offset:offset + limit]]
    return list(with_xet_hashes(file_entry(git, path, oid) if is_file else
                                {"type": "directory", "path": path, "oid": str(oid)}
                                for path, is_file, oid in page)), len(ordered)


def _entry(git: GitRepo, path: str, obj: pygit2.Object) -> dict[str, Any]:
    if obj.type_str == "tree":
        return {"type": "directory", "path": path, "oid": str(obj.id)}
    return file_entry(git, path, obj.id)


def _walk(git: GitRepo, tree: pygit2.Tree, base: str, recursive: bool) -> Iterator[tuple[str, pygit2.Object]]:
    """(path, tree entry) of every folder and file, without reading any file."""
    for obj in tree:
        path = f"{base}/{obj.name}" if base else obj.name
        if obj.type_str == "tree":
            yield path, obj
            if recursive:
                yield from _walk(git, git.repo[obj.id], path, True)
        elif obj.type_str == "blob":
            yield path, obj


def paths_info(git: GitRepo, commit: pygit2.Commit, paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for path in dict.fromkeys(p.strip("/") for p in paths):
        obj = _entry_at(commit.tree, path) if path else None
        if obj is None:
            continue  # the Hub silently omits missing paths
        if obj.type_str == "tree":
            out.append({"type": "directory", "path": path, "oid": str(obj.id)})
        else:
            out.append(file_entry(git, path, obj.id))
    return list(with_xet_hashes(out))


def last_commits(git: GitRepo, head: pygit2.Commit, paths: list[str]) -> dict[str, pygit2.Commit]:
    """For each path, the newest commit that changed it (one history walk for all paths)."""
    pending: dict[str, pygit2.Oid | None] = {}
    for p in paths:
        entry = _entry_at(head.tree, p)
        pending[p] = entry.id if entry is not None else None
    found: dict[str, pygit2.Commit] = {}
    walker = git.repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    for n, commit in enumerate(walker):
        if not pending or n > LAST_COMMIT_WALK_LIMIT:
            break
        parent_trees = [p.tree for p in commit.parents]
        for path, oid in list(pending.items()):
            same_in_parent = False
            for tree in parent_trees:
                entry = _entry_at(tree, path)
                if entry is not None and entry.id == oid:
                    same_in_parent = True
                    break
            if not same_in_parent:
                found[path] = commit
                del pending[path]
    return found


def commit_summary(commit: pygit2.Commit) -> dict[str, Any]:
    title, _, _ = commit.message.partition("\n")
    return {"id": str(commit.id), "title": title, "date": iso(commit_datetime(commit))}


def history_entry(commit: pygit2.Commit, formatted: bool, signature: dict[str, Any] | None = None,
                  ) -> dict[str, Any]:
    title, _, rest = commit.message.partition("\n")
    item: dict[str, Any] = {
        "id": str(commit.id), "title": title, "message": rest.strip("\n"),
        "date": iso(commit_datetime(commit)), "authors": [{"user": commit.author.name}],
    }
    if signature is not None:
        item["signature"] = signature  # bastion.signing's stored verdict (status, type, keyId, signer, reason)
    if formatted:
        item["formatted"] = {"title": html.escape(title), "message": html.escape(rest.strip("\n"))}
    return item


def history(git: GitRepo, start: pygit2.Commit, skip: int, limit: int) -> tuple[list[pygit2.Commit], bool]:
    walker = git.repo.walk(start.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    out: list[pygit2.Commit] = []
    for n, commit in enumerate(walker):
        if n < skip:
            continue
        if len(out) == limit:
            return out, True
        out.append(commit)
    return out, False


def refs_payload(git: GitRepo, include_prs: bool) -> dict[str, Any]:
    def items(prefix: str) -> list[dict[str, str]]:
        return [{"name": name[len(prefix):], "ref": name, "targetCommit": target}
                for name, target in git.refs(prefix)]

    payload: dict[str, Any] = {"branches": items("refs/heads/"), "converts": [], "tags": items("refs/tags/")}
    if include_prs:
        prs = [{"name": name, "ref": name, "targetCommit": target} for name, target in git.refs("refs/pr/")]
        payload["pullRequests"] = sorted(prs, key=lambda r: int(r["name"].rsplit("/", 1)[1]))
    return payload


MODEL_EXPANDS = frozenset({
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled", "downloads",
    "downloadsAllTime", "evalResults", "gated", "gguf", "inference", "inferenceProviderMapping", "lastModified",
    "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private", "resourceGroup",
    "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage",
    "widgetData", "securityRepoStatus",
})
DATASET_EXPANDS = frozenset({
    "author", "cardData", "citation", "createdAt", "description", "disabled", "downloads", "downloadsAllTime",
    "gated", "lastModified", "likes", "mainSize", "paperswithcode_id", "private", "resourceGroup", "sha",
    "siblings", "tags", "trendingScore", "usedStorage", "securityRepoStatus",
})
SPACE_EXPANDS = frozenset({
    "author", "cardData", "createdAt", "datasets", "disabled", "lastModified", "likes", "models", "private",
    "resourceGroup", "runtime", "sdk", "sha", "siblings", "subdomain", "tags", "trendingScore", "usedStorage",
})
EXPANDS = {"model": MODEL_EXPANDS, "dataset": DATASET_EXPANDS, "space": SPACE_EXPANDS}


def siblings(git: GitRepo, commit: pygit2.Commit, with_blobs: bool) -> list[dict[str, Any]]:
    out = []
    for path, obj in _walk(git, commit.tree, "", True):
        if obj.type_str != "blob":
            continue
        entry = file_entry(git, path, obj.id)
        if not with_blobs:
            out.append({"rfilename": entry["path"]})
            continue
        item = {"rfilename": entry["path"], "size": entry["size"], "blobId": entry["oid"]}
        if "lfs" in entry:
            item["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["lfs"]["size"],
                           "pointerSize": entry["lfs"]["pointerSize"]}
        out.append(item)
    return out


def repo_info(repo: Repo, git: GitRepo, commit: pygit2.Commit, *, expand: list[str], blobs: bool,
              security_status: dict[str, Any] | None, resource_group: dict[str, Any] | None = None,
              ) -> dict[str, Any]:
    files = siblings(git, commit, blobs)
    full: dict[str, Any] = {
        "_id": f"{repo.id:024x}", "id": repo.repo_id, "author": repo.namespace, "sha": str(commit.id),
        "lastModified": iso(commit_datetime(commit)), "createdAt": iso(repo.created_at), "private": repo.private,
        "gated": repo.gated or False, "disabled": False, "downloads": repo.downloads,
        "downloadsAllTime": repo.downloads, "likes": repo.likes, "tags": [], "siblings": files,
        "usedStorage": sum(f.get("size", 0) for f in files) if blobs else None, "trendingScore": 0,
        "region": repo.region,  # the storage region its bytes live in
    }
    if repo.type == "model":
        full.update({"library_name": None, "pipeline_tag": None, "safetensors": None})
    if repo.type == "space":
        full.update({"sdk": repo.settings.get("sdk"), "runtime": None, "subdomain": None})
    if full["usedStorage"] is None:
        del full["usedStorage"]
    if security_status is not None:
        full["securityRepoStatus"] = security_status
    if resource_group is not None:
        full["resourceGroup"] = resource_group
    if not expand:
        return full
    allowed = EXPANDS[repo.type]
    out = {"_id": full["_id"], "id": full["id"]}
    for key in expand:
        if key in allowed and key in full:
            out[key] = full[key]
        elif key in allowed:
            out[key] = None
    return out
