"""Permanently deleting LFS files from a repo (`permanently_delete_lfs_files`): how an owner purges a leak.

Order of one purge (one transaction, the repo's git write lock held from step 3):
1. Every oid must be linked to the repo (or purged from it before: a repeat is a no-op); an oid the
   repo never held is a 404 whatever other repos hold, so the answer is no oracle for other tenants.
2. The purge is recorded (PurgedLfsObject: every view of the repo's history shows those files as
   deleted, no download serves them) and the repo's links go, with one `repo.delete_lfs_file` event.
3. `rewriteHistory`: every ref (branches, tags, pull-request refs) is rewritten without the files whose
   pointer names a purged oid, each ref moved by compare-and-swap. Rewritten commits keep author,
   committer and message but not signatures (their trees changed); the event lists old and new tips.
4. Objects no other repo links lose their rows (LFS object, Xet file registration), and after the
   transaction their bytes: the blob-store file, and every Xet xorb no remaining file uses and no
   other repo uploaded. A xorb still used by another file (Xet packs many files' chunks together) is
   kept and counted in the event (`xorbsKept`): those bytes go when the last file using them does.
   Another repo's link keeps the object whole: that repo uploaded the same bytes itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pygit2
from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.db import transaction
from bastion.errors import BadRequest, EntryNotFound
from bastion.hub import Hub
from bastion.lfs.models import LfsObject, RepoLfsObject
from bastion.repos.browse import iso
from bastion.repos.models import PurgedLfsObject, Repo
from bastion.repos.service import purged_lfs_oids
from bastion.storage.gitstore import LFS_POINTER_MAX, GitRepo, parse_lfs_pointer
from bastion.storage.regions import DEFAULT_REGION, region_of_key
from bastion.xet import service as xet
from bastion.xet.models import RepoXetXorb, XetDedupeChunk, XetFile, XetFileXorb, XetXorb

MAX_BATCH = 1000  # the client sends deletions by batches of 1000
_OID = re.compile(r"[0-9a-f]{64}")


# ---- listing ----------------------------------------------------------------------------------------

def _ref_order(name: str) -> tuple[int, str]:
    """main first, then other branches, tags, everything else: a file's `ref` names the likeliest home."""
    rank = 0 if name == "refs/heads/main" else 1 if name.startswith("refs/heads/") else \
        2 if name.startswith("refs/tags/") else 3
    return rank, name


def _pointer_blobs(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str, seen: set[pygit2.Oid],
                   out: dict[str, tuple[str, pygit2.Oid]]) -> None:
    """oid -> (path, pointer blob) for every LFS pointer under `tree` not found before."""
    stack = [(tree, prefix)]
    while stack:
        node, base = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        for entry in node:
            path = f"{base}{entry.name}"
            if entry.type_str == "tree":
                stack.append((repo[entry.id], f"{path}/"))
            elif entry.type_str == "blob" and repo.odb.read_header(entry.id)[1] <= LFS_POINTER_MAX:
                pointer = parse_lfs_pointer(repo[entry.id].data)
                if pointer is not None and pointer.oid not in out:
                    out[pointer.oid] = (path, entry.id)


def where_referenced(git: GitRepo, wanted: set[str]) -> dict[str, tuple[str, str]]:
    """oid -> (a path, the ref whose history has it) for the wanted oids; each tree read once."""
    repo, found, refs_of = git.repo, {}, {}
    seen_trees: set[pygit2.Oid] = set()
    seen_commits: set[pygit2.Oid] = set()
    for name in sorted(repo.references, key=_ref_order):
        try:
            tip = repo.references[name].peel(pygit2.Commit)
        except (pygit2.GitError, pygit2.InvalidSpecError, KeyError, ValueError):
            continue
        for commit in repo.walk(tip.id, pygit2.enums.SortMode.TIME):
            if commit.id in seen_commits:
                continue
            seen_commits.add(commit.id)
            blobs: dict[str, tuple[str, pygit2.Oid]] = {}
            _pointer_blobs(repo, commit.tree, "", seen_trees, blobs)
            for oid, (path, _blob) in blobs.items():
                if oid in wanted and oid not in found:
                    found[oid], refs_of[oid] = path, name
            if len(found) == len(wanted):
                break
    return {oid: (found[oid], refs_of[oid]) for oid in found}


def list_lfs_files(hub: Hub, session: Session, repo: Repo) -> list[dict[str, Any]]:
    """The repo's LFS files as the Hub lists them (oldest push first): fileOid, oid, filename, pushedAt,
    ref, size. `filename` and `ref` come from the repo's history (empty and null for an upload that no
    commit of any ref names)."""
    rows = session.execute(select(RepoLfsObject.oid, RepoLfsObject.created_at, LfsObject.size)
                           .join(LfsObject, LfsObject.oid == RepoLfsObject.oid)
                           .where(RepoLfsObject.repo_id == repo.id)
                           .order_by(RepoLfsObject.created_at, RepoLfsObject.oid)).all()
    where = where_referenced(hub.git(repo.storage_key), {oid for oid, _, _ in rows}) if rows else {}
    return [{"fileOid": oid, "oid": oid, "filename": where.get(oid, ("", None))[0], "pushedAt": iso(pushed),
             "ref": where.get(oid, ("", None))[1], "size": int(size)} for oid, pushed, size in rows]


# ---- purging ------------------------------------------------------------------------------------------

@dataclass
class PurgeResult:
    purged: list[str] = field(default_factory=list)
    rewritten: dict[str, tuple[str, str]] = field(default_factory=dict)  # ref -> (old tip, new tip)
    freed: list[str] = field(default_factory=list)  # objects whose bytes this purge removes
    xorbs: list[str] = field(default_factory=list)  # xorbs removed with them
    xorbs_kept: int = 0
    region: str = DEFAULT_REGION  # the repo's storage region: where the freed bytes are


def parse_oids(raw: object) -> list[str]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_BATCH or \
            not all(isinstance(o, str) and _OID.fullmatch(o) for o in raw):
        raise BadRequest(f"'deletions.sha' must be a list of 1 to {MAX_BATCH} lowercase sha256 object ids")
    return list(dict.fromkeys(raw))


class _Rewriter:
    """Rewrites commits without the pointer blobs of purged objects (memoized across refs)."""

    def __init__(self, repo: pygit2.Repository, oids: set[str]) -> None:
        self.repo, self.oids = repo, oids
        self.trees: dict[pygit2.Oid, pygit2.Oid | None] = {}
        self.commits: dict[pygit2.Oid, pygit2.Oid] = {}
        self.pointers: dict[pygit2.Oid, bool] = {}

    def _purged_pointer(self, blob_id: pygit2.Oid) -> bool:
        hit = self.pointers.get(blob_id)
        if hit is None:
            hit = False
            if self.repo.odb.read_header(blob_id)[1] <= LFS_POINTER_MAX:
                pointer = parse_lfs_pointer(self.repo[blob_id].data)
                hit = pointer is not None and pointer.oid in self.oids
            self.pointers[blob_id] = hit
        return hit

    def tree(self, tree_id: pygit2.Oid) -> pygit2.Oid | None:
        """The tree without purged pointers (None when nothing is left of it)."""
        if tree_id in self.trees:
            return self.trees[tree_id]
        builder, changed, count = self.repo.TreeBuilder(), False, 0
        for entry in self.repo[tree_id]:
            target: pygit2.Oid | None = entry.id
            if entry.type_str == "tree":
                target = self.tree(entry.id)
            elif entry.type_str == "blob" and self._purged_pointer(entry.id):
                target = None
            if target is None:
                changed = True
                continue
            changed = changed or target != entry.id
            builder.insert(entry.name, target, entry.filemode)
            count += 1
        new = (builder.write() if changed else tree_id) if count else None
        self.trees[tree_id] = new
        return new

    def commit(self, tip: pygit2.Oid) -> pygit2.Oid:
        for commit in self.repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.REVERSE):
            if commit.id in self.commits:
                continue
            tree = self.tree(commit.tree_id) or self.repo.TreeBuilder().write()
            parents = [self.commits.get(p, p) for p in commit.parent_ids]
            if tree == commit.tree_id and parents == list(commit.parent_ids):
                self.commits[commit.id] = commit.id
            else:
                self.commits[commit.id] = self.repo.create_commit(None, commit.author, commit.committer,
                                                                  commit.message, tree, parents)
        return self.commits[tip]


def _rewrite_refs(git: GitRepo, oids: set[str]) -> dict[str, tuple[str, str]]:
    """Every ref without the purged files; call with the repo's write lock held."""
    repo, rewriter, moved = git.repo, _Rewriter(git.repo, oids), {}
    for name in sorted(repo.references):
        ref = repo.references[name]
        target = ref.target
        obj = repo[target] if isinstance(target, pygit2.Oid) else None
        if isinstance(obj, pygit2.Tag):
            commit = obj.peel(pygit2.Commit)
            new = rewriter.commit(commit.id)
            if new == commit.id:
                continue
            # An annotated tag keeps its tagger and message, on the rewritten commit.
            tag_name = name.removeprefix("refs/tags/")
            repo.references.delete(name)
            repo.create_tag(tag_name, new, pygit2.enums.ObjectType.COMMIT, obj.tagger, obj.message)
            moved[name] = (str(commit.id), str(new))
        elif isinstance(obj, pygit2.Commit):
            new = rewriter.commit(obj.id)
            if new != obj.id:
                git.compare_and_swap(name, obj.id, new)
                moved[name] = (str(obj.id), str(new))
    return moved


def permanently_delete(hub: Hub, session: Session, repo: Repo, actor_user_id: int | None, oids: list[str],
                       rewrite_history: bool) -> PurgeResult:
    """Steps 1-4 (database part) of the module's order; the caller commits, then `free_bytes(result)`."""
    result = PurgeResult(region=region_of_key(repo.storage_key))
    linked = dict(session.execute(select(RepoLfsObject.oid, LfsObject.size)
                                  .join(LfsObject, LfsObject.oid == RepoLfsObject.oid)
                                  .where(RepoLfsObject.repo_id == repo.id, RepoLfsObject.oid.in_(oids))).tuples().all())
    before = purged_lfs_oids(session, repo.id, oids)
    missing = [o for o in oids if o not in linked and o not in before]
    if missing:
        raise EntryNotFound(f"LFS file {missing[0]} not found in this repository")
    fresh = [o for o in oids if o in linked]
    for oid in fresh:
        session.add(PurgedLfsObject(repo_id=repo.id, oid=oid, size=int(linked[oid]), actor_user_id=actor_user_id))
    session.execute(delete(RepoLfsObject).where(RepoLfsObject.repo_id == repo.id, RepoLfsObject.oid.in_(fresh)))
    session.flush()
    result.purged = fresh
    git = hub.git(repo.storage_key)
    with git.write_lock():
        if rewrite_history:
            result.rewritten = _rewrite_refs(git, set(oids))
        if not fresh and not result.rewritten:
            return result  # a repeat: nothing changed, nothing to record
        _drop_unlinked(session, repo.id, fresh, result)
        audit.record(session, AuditAction.REPO_DELETE_LFS_FILE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                     namespace=repo.namespace,
                     details={"oids": fresh[:MAX_BATCH], "rewriteHistory": rewrite_history,
                              "rewrittenRefs": {k: {"from": a, "to": b} for k, (a, b) in result.rewritten.items()},
                              "bytesRemoved": len(result.freed), "xorbsRemoved": len(result.xorbs),
                              "xorbsKept": result.xorbs_kept})
        session.flush()
    return result


def _drop_unlinked(session: Session, repo_id: int, oids: list[str], result: PurgeResult) -> None:
    """Rows of objects no repo links any more: the LFS object, its Xet registration, xorbs only it used."""
    if not oids:
        return
    gone = list(session.scalars(delete(LfsObject).where(
        LfsObject.oid.in_(oids), ~exists().where(RepoLfsObject.oid == LfsObject.oid)).returning(LfsObject.oid)))
    result.freed = gone
    if not gone:
        return
    files = list(session.scalars(select(XetFile.file_hash).where(XetFile.sha256.in_(gone))))
    if not files:
        return
    candidates = set(session.scalars(select(XetFileXorb.xorb_hash).where(XetFileXorb.file_hash.in_(files))))
    session.execute(delete(XetFileXorb).where(XetFileXorb.file_hash.in_(files)))
    session.execute(delete(XetFile).where(XetFile.file_hash.in_(files)))
    session.flush()
    if not candidates:
        return
    # A xorb goes when no remaining file uses it and no other repo uploaded it (checked in the DELETE).
    other_repo = exists().where(RepoXetXorb.xorb_hash == XetXorb.hash, RepoXetXorb.repo_id != repo_id)
    removable = (~exists().where(XetFileXorb.xorb_hash == XetXorb.hash)) & ~other_repo
    doomed = list(session.scalars(delete(XetXorb).where(XetXorb.hash.in_(sorted(candidates)), removable)
                                  .returning(XetXorb.hash)))
    if doomed:
        session.execute(delete(XetDedupeChunk).where(XetDedupeChunk.xorb_hash.in_(doomed)))
        session.execute(delete(RepoXetXorb).where(RepoXetXorb.xorb_hash.in_(doomed)))
    result.xorbs = doomed
    result.xorbs_kept = len(candidates) - len(doomed)


def free_bytes(hub: Hub, result: PurgeResult) -> None:
    """After the purge committed: remove the bytes of the objects and xorbs whose rows it removed,
    unless an upload registered the same object or xorb again meanwhile (its uploader has the bytes)."""
    store, blobs = xet.xorb_store(hub, result.region), hub.blobs_in(result.region)
    for oid in result.freed:
        store.unindex_file(oid)
        trash = blobs.trash(oid)
        if trash is None:
            continue
        with transaction(hub.sessions, readonly=True) as session:
            again = session.get(LfsObject, oid) is not None
        if again:
            blobs.restore(oid, trash)
        else:
            trash.discard()
    for xorb in result.xorbs:
        trash = store.trash_xorb(xorb)
        if trash is None:
            continue
        with transaction(hub.sessions, readonly=True) as session:
            again = session.get(XetXorb, xorb) is not None
        if again:
            store.restore_xorb(xorb, trash)
        else:
            trash.discard()
