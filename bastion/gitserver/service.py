"""The git push path: what a push may change (checked in quarantine) and how its refs move.

`scan_push`/`judge_push` run from the pre-receive hook while the objects are still quarantined;
`apply_push` runs from the proc-receive hook and moves the refs as an API commit does: DB
transaction, then the repo's write lock, then compare-and-swap, with audit events and post-commit hooks.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pygit2
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.db import utcnow
from bastion.errors import BadRequest, Conflict, Forbidden, RepoNotFound
from bastion.hub import Hub
from bastion.lfs import allowance
from bastion.lfs import locks as lfs_locks
from bastion.repos import admission, protection
from bastion.repos.models import Repo
from bastion.signing import service as signing
from bastion.storage.gitstore import DEFAULT_BRANCH, PR_REF_RE, GitRepo, objects_visible
from bastion.tokens import service as tokens
from bastion.tokens.models import AccessToken

ZERO = "0" * 40
OID_RE = re.compile(r"^[0-9a-f]{40}\Z")
PUSH_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
MAX_MESSAGES = 20
PUSH_PURPOSE = "git-push"
PUSH_TTL_SECONDS = 6 * 3600  # the pack upload precedes the hooks; a slow 10 GiB push must still pass


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def created(self) -> bool:
        return self.old == ZERO

    @property
    def deleted(self) -> bool:
        return self.new == ZERO


@dataclass
class CheckResult:
    ok: bool
    messages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RefResult:
    ref: str
    ok: bool
    reason: str = ""


def parse_commands(raw: object) -> list[RefUpdate]:
    if not isinstance(raw, list) or not raw or len(raw) > 10_000:
        raise BadRequest("'commands' must be a non-empty list")
    out = []
    for item in raw:
        if (not isinstance(item, list) or len(item) != 3 or not all(isinstance(x, str) for x in item)
                or not OID_RE.match(item[0]) or not OID_RE.match(item[1])):
            raise BadRequest("each command must be [old-oid, new-oid, ref]")
        out.append(RefUpdate(*item))
    return out


PUSH_OPTIONS = ("secrets-bypass",)


def parse_push_options(raw: object) -> str | None:
    """The push's `git push -o` options → the secret push-protection bypass reason, if one was given.

    `-o secrets-bypass="this is a test credential"` is the only option; anything else is refused by
    name, so a mistyped bypass never looks accepted.
    """
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > 100 or not all(isinstance(o, str) for o in raw):
        raise BadRequest("'options' must be a list of strings")
    reason = None
    for option in raw:
        key, sep, value = option.partition("=")
        if key.strip() not in PUSH_OPTIONS:
            raise BadRequest(f"Unknown push option {option[:100]!r}: Bastion knows "
                             "-o secrets-bypass=\"<reason>\" (repository managers only)")
        if not sep or not value.strip():
            raise BadRequest("-o secrets-bypass needs a reason, e.g. -o secrets-bypass=\"test credential\"")
        reason = value.strip()
    return reason


# ---- who may push: the push token and the pusher ---------------------------------------------

def live_token(session: Session, token_id: int) -> AccessToken:
    """The pusher's token, re-read at hook time: a token revoked during a push stops it."""
    tok = session.get(AccessToken, token_id)
    if tok is None or not tokens.is_live(tok):
        raise Forbidden("The access token used for this push is no longer valid")
    return tok


def approval_path(hub: Hub, push_id: str) -> Path:
    if not PUSH_ID_RE.match(push_id):
        raise BadRequest("invalid push id")
    return hub.settings.tmp_dir / "git-push" / f"{push_id}.json"


def new_push_id() -> str:
    return secrets.token_hex(16)


# A push whose receive-pack was killed (a crash, SIGKILL) leaves its quarantine behind: git removes
# it only when the process ends normally. Nothing in it was ever reachable from a ref.
STALE_QUARANTINE = timedelta(hours=24)


def sweep_stale_quarantines(git_dir: Path, older_than: timedelta = STALE_QUARANTINE) -> list[Path]:
    """Remove this repo's abandoned push quarantines; a live push writes into its own and is spared."""
    removed = []
    cutoff = time.time() - older_than.total_seconds()
    for quarantine in (git_dir / "objects").glob("tmp_objdir-incoming-*"):
        try:
            newest = max(p.stat().st_mtime for p in [quarantine, *quarantine.rglob("*")])
        except (FileNotFoundError, ValueError):
            continue  # finished and removed meanwhile
        if newest < cutoff:
            shutil.rmtree(quarantine, ignore_errors=True)
            removed.append(quarantine)
    return removed


# ---- per-ref rules --------------------------------------------------------------------------

def ref_names(git: GitRepo, updates: list[RefUpdate]) -> dict[str, protection.RefNames]:
    """Branch and tag names a push's new refs must not collide with: the repo's refs and the
    push's other new refs (two new refs that differ only in case are both refused)."""
    created = [u.ref for u in updates if u.created]
    return {kind: protection.RefNames([*git.ref_names(prefix), *(r.removeprefix(prefix) for r in created
                                                                  if r.startswith(prefix))])
            for kind, prefix in (("branch", "refs/heads/"), ("tag", "refs/tags/"))}


def ref_violation(repo: Repo, git: GitRepo, update: RefUpdate, names: dict[str, protection.RefNames]) -> str | None:
    """Why this ref may not change this way, or None. The objects must be readable by `git`.

    `names`: what `ref_names` gives for the push, to judge the name of a new branch or tag.
    """
    ref = update.ref
    if ref.startswith("refs/heads/"):
        kind, name = "branch", ref.removeprefix("refs/heads/")
    elif ref.startswith("refs/tags/"):
        kind, name = "tag", ref.removeprefix("refs/tags/")
    elif PR_REF_RE.match(ref):
        if update.created or update.deleted:
            return "pull request refs are created and closed through the API, not by push"
        kind, name = "pr", ref
    else:
        return "only branches (refs/heads/*) and tags (refs/tags/*) can be pushed"
    if kind != "pr":
        try:
            GitRepo.validate_ref_name(name)
        except BadRequest as exc:
            return exc.message
        if update.created and (refused := protection.creation_refused(repo, kind, name, names[kind])):
            return refused
    if update.deleted:
        if kind == "branch" and name == DEFAULT_BRANCH:
            return f"deleting the default branch {DEFAULT_BRANCH!r} is not allowed"
        return protection.deletion_refused(repo, kind, name) if kind != "pr" else None
    try:
        obj = git.repo[update.new]
    except (KeyError, ValueError):
        return f"object {update.new} is missing"
    if kind in ("branch", "pr") and not isinstance(obj, pygit2.Commit):
        return f"{ref} must point to a commit"
    if kind == "tag":
        try:
            obj.peel(pygit2.Commit)
        except (pygit2.InvalidSpecError, pygit2.GitError, ValueError, KeyError):
            return f"tag {name!r} must point to a commit"
    if kind == "tag" and not update.created and update.old != update.new:
        return protection.rewrite_refused(repo, "tag", name, "moves")
    if kind == "branch" and not update.created:
        old, new = pygit2.Oid(hex=update.old), pygit2.Oid(hex=update.new)
        if old != new and not git.repo.descendant_of(new, old):
            return protection.rewrite_refused(repo, "branch", name, "force-pushes (non-fast-forward)")
    return None


# ---- content checks (run in quarantine) -------------------------------------------------------

def open_quarantined(hub: Hub, repo: Repo, quarantine: str | None) -> GitRepo:
    """The repo with the push's quarantined objects visible (they are not in the repo yet)."""
    git = hub.git(repo.storage_key)
    if quarantine:
        objects = (git.path / "objects").resolve()
        path = Path(quarantine).resolve()
        # The hook names the directory; it must be this repo's receive-pack quarantine.
        if path.parent != objects or not path.name.startswith("tmp_objdir-incoming-") or not path.is_dir():
            raise BadRequest("invalid quarantine directory")
        git.repo.odb.add_disk_alternate(str(path))
    return git


@contextmanager
def quarantine_visible(git: GitRepo, quarantine: str | None) -> Iterator[None]:
    """While the push's checks run, every reader of this repo (the post-commit hooks included) sees
    its quarantined objects; `open_quarantined` validated the directory."""
    if not quarantine:
        yield
        return
    with objects_visible(git.path, Path(quarantine).resolve()):
        yield


@dataclass
class PushScan:
    checks: admission.FileChecks = field(default_factory=admission.FileChecks)
    touched: set[str] = field(default_factory=set)
    brought: dict[str, admission.Incoming] = field(default_factory=dict)  # ref -> what its move brings in
    # ref -> every commit the push makes reachable from it, for refs under "require signed commits"
    entering: dict[str, list[str]] = field(default_factory=dict)
    git: GitRepo | None = None  # the quarantined repo the scan read, for checks that need the database

    @property
    def problems(self) -> list[str]:
        return self.checks.problems

    @property
    def commits(self) -> dict[str, list[str]]:
        return {ref: inc.commits for ref, inc in self.brought.items()}


def scan_push(hub: Hub, repo: Repo, git: GitRepo, updates: list[RefUpdate]) -> PushScan:
    """Walk what the push introduces (no database): ref rules, paths, sizes, LFS pointers."""
    scan = PushScan(git=git)
    refused: set[str] = set()
    names = ref_names(git, updates)
    for update in updates:
        reason = ref_violation(repo, git, update, names)
        if reason:
            scan.problems.append(f"{update.ref}: {reason}")
            refused.add(update.ref)
    for update in updates:
        if update.deleted:
            continue
        brought = admission.incoming(git, update.new, None if update.created else update.old)
        scan.brought[update.ref] = brought
        for f in brought.files:
            scan.touched.add(f.path)
            if f.blob:
                admission.check_file(hub, git, f, scan.checks)
        # The same tree rules as the commit API: folder sizes, total size, case-colliding names.
        scan.checks.problems += admission.tree_rule_problems(hub, git, repo, brought)
        if update.ref not in refused and signing.rule_applies(repo, update.ref):
            # Walked here, outside the database transaction.
            scan.entering[update.ref] = signing.entering_ref(git, repo, update.ref, update.new,
                                                             None if update.created else update.old)
    return scan


def _refusal(problems: list[str]) -> CheckResult:
    shown = list(dict.fromkeys(problems))
    more = len(shown) - MAX_MESSAGES
    messages = ["Bastion rejected this push:"] + [f"  - {p}" for p in shown[:MAX_MESSAGES]]
    if more > 0:
        messages.append(f"  ... and {more} more problem(s)")
    return CheckResult(False, messages)


def judge_push(session: Session, repo: Repo, user_id: int, scan: PushScan) -> CheckResult:
    """The verdict: the scan's problems plus LFS objects not held by this repo and others' locks."""
    if scan.git is not None and (scan.brought or scan.entering):
        # Every pushed commit's signature is verified and stored here, while the objects are
        # quarantined; the repo's "require signed commits" rule rejects any unverified commit the
        # push brings into a covered ref, even one another ref (an uncovered branch) already holds.
        scan.problems.extend(signing.check_push(session, repo, scan.git, scan.commits, scan.entering))
    admission.check_pointers(session, repo, scan.checks)
    for lock in lfs_locks.held_by_others(session, repo.id, user_id, sorted(scan.touched)):
        scan.problems.append(f"{lock.path!r} is locked by {lock.owner_name} (git lfs locks)")
    if not scan.problems:
        return CheckResult(True)
    return _refusal(scan.problems)


def charge_pack(hub: Hub, session: Session, repo: Repo, user_id: int, push_id: str,
                quarantine: str | None) -> CheckResult:
    """Charge the pack a pull request's author (who cannot write to the repo) brought to their daily contribution
    allowance (`lfs.allowance`), in the caller's transaction; a refusal past it. git bounded the pack to what
    remained when the push began (`receive.maxInputSize`); concurrent pushes are caught here."""
    size = sum(f.stat().st_size for f in Path(quarantine).rglob("*") if f.is_file()) if quarantine else 0
    try:
        allowance.charge(session, hub.settings.contribution_upload_bytes_per_day, user_id, repo.id,
                         [(f"pack:{push_id}", size)])
    except allowance.AllowanceExceeded as exc:
        return _refusal([exc.message])
    return CheckResult(True)


def admit_push(hub: Hub, session: Session, repo_id: int, updates: list[RefUpdate], scan: PushScan,
               options: dict[str, str] | None) -> CheckResult:
    """The refusing checks of every ref move of the push (`admission.admit`, JUDGE phase: push
    protection, block unsafe files, the signed-commits rule), run in pre-receive while the objects are
    still quarantined: a refused push fails here and git deletes its quarantine, so nothing of it is
    ever stored. The caller's transaction must roll back on the exception this raises."""
    repo = session.get(Repo, repo_id)
    if repo is None:
        raise RepoNotFound()
    with admission.phase(admission.JUDGE):
        for update in updates:
            if update.deleted:
                continue
            try:
                admission.admit(hub, session, repo, update.ref, None if update.created else update.old, update.new,
                                git=scan.git, options=options, brought=scan.brought[update.ref],
                                content_checked=True, tag_message=_tag_message(scan.git, update.new))
            except (BadRequest, Forbidden) as exc:
                raise type(exc)(f"{update.ref}: {exc.message}") from exc
    return CheckResult(True)


def save_approval(hub: Hub, push_id: str, updates: list[RefUpdate],
                  brought: dict[str, admission.Incoming]) -> None:
    """Remember which commands passed pre-receive, and what each brings in; proc-receive moves only those."""
    path = approval_path(hub, push_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"commands": [[u.old, u.new, u.ref] for u in updates],
            "brought": {ref: {"commits": inc.commits, "files": [[f.path, f.blob, f.mode] for f in inc.files]}
                        for ref, inc in brought.items()}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def load_approval(hub: Hub, push_id: str) -> tuple[set[RefUpdate], dict[str, admission.Incoming]]:
    try:
        body = json.loads(approval_path(hub, push_id).read_text())
    except FileNotFoundError:
        return set(), {}
    approved = {RefUpdate(*c) for c in body["commands"]}
    return approved, {ref: admission.Incoming(list(inc["commits"]),
                                              [admission.ChangedFile(p, b, m) for p, b, m in inc["files"]])
                      for ref, inc in body.get("brought", {}).items()}


def discard_approval(hub: Hub, push_id: str) -> None:
    approval_path(hub, push_id).unlink(missing_ok=True)


# ---- moving the refs (proc-receive) -----------------------------------------------------------

def _current(git: GitRepo, ref: str) -> str:
    found = git.repo.references.get(ref)
    return str(found.target) if found is not None else ZERO


def _move(git: GitRepo, ref: str, old: str, new: str) -> None:
    """Compare-and-swap `ref` from `old` to `new` (ZERO: absent)."""
    if new == ZERO:
        git.delete_ref(ref, pygit2.Oid(hex=old))
    else:
        git.compare_and_swap(ref, None if old == ZERO else pygit2.Oid(hex=old), pygit2.Oid(hex=new))


def _target(repo: Repo) -> tuple[str, str]:
    return ("repo", f"{repo.type}/{repo.repo_id}")


def _record(session: Session, repo: Repo, git: GitRepo, update: RefUpdate, commits: int) -> None:
    """The audit event of one ref move; `commits`: how many commits it brought in (each was judged)."""
    ref, short = update.ref, update.ref.split("/", 2)[-1]
    is_tag = ref.startswith("refs/tags/")
    if update.deleted:
        action = AuditAction.REPO_TAG_DELETE if is_tag else AuditAction.REPO_BRANCH_DELETE
        key = "tag" if is_tag else "branch"
        audit.record(session, action, target=_target(repo), namespace=repo.namespace,
                     details={key: short, "commit": update.old})
        return
    if is_tag:
        audit.record(session, AuditAction.REPO_TAG_CREATE, target=_target(repo), namespace=repo.namespace,
                     details={"tag": short, "commit": update.new, "moved_from": None if update.created else update.old,
                              "judged": commits})
        return
    if update.created and ref.startswith("refs/heads/"):
        audit.record(session, AuditAction.REPO_BRANCH_CREATE, target=_target(repo), namespace=repo.namespace,
                     details={"branch": short, "commit": update.new, "judged": commits})
        if commits == 0:
            return
    forced = not update.created and not git.repo.descendant_of(pygit2.Oid(hex=update.new),
                                                               pygit2.Oid(hex=update.old))
    audit.record(session, AuditAction.REPO_COMMIT, target=_target(repo), namespace=repo.namespace,
                 details={"commit": update.new, "parent": None if update.created else update.old, "ref": ref,
                          "commits": commits, "judged": commits, "forced": forced})


def _tag_message(git: GitRepo, oid: str) -> str | None:
    """The messages of the annotated tag objects `oid` names (a tag of a tag: each), or None."""
    messages = []
    obj = git.repo[oid]
    while isinstance(obj, pygit2.Tag) and len(messages) < 100:
        messages.append(obj.message or "")
        obj = git.repo[obj.target]
    return "\n".join(messages) if messages else None


def apply_push(hub: Hub, session: Session, repo: Repo, updates: list[RefUpdate], atomic: bool,
               approved: set[RefUpdate], brought: dict[str, admission.Incoming],
               options: dict[str, str] | None = None) -> list[RefResult]:
    """Move the pushed refs. The caller's transaction is open (DB first, then the flock).

    The content was judged in pre-receive (`admit_push`); here each move is admitted again in the
    EFFECTS phase only (scan enqueue; the signed-commits rule, cheap with stored verdicts, is
    re-applied under the lock) with what pre-receive found it brings in.

    Each ref moves by compare-and-swap from the old value the client saw, under the same
    write lock API commits take, so a racing API commit and push are serialised and the loser
    is told: nothing is overwritten silently. A failure while moving restores the refs already
    moved and the transaction rolls back their audit rows.
    """
    git = hub.git(repo.storage_key)
    results: dict[str, RefResult] = {}
    with git.write_lock():
        locked = session.scalar(select(Repo).where(Repo.id == repo.id).with_for_update())
        if locked is None:
            raise RepoNotFound()
        todo: list[RefUpdate] = []
        names = ref_names(git, updates)
        for update in updates:
            if update not in approved:
                results[update.ref] = RefResult(update.ref, False, "not checked by pre-receive")
            elif _current(git, update.ref) != update.old:
                results[update.ref] = RefResult(update.ref, False, "stale info: the ref moved meanwhile, "
                                                "fetch first")
            elif reason := ref_violation(locked, git, update, names):
                results[update.ref] = RefResult(update.ref, False, reason)
            else:
                todo.append(update)
        if atomic and results:
            return [results.get(u.ref) or RefResult(u.ref, False, "atomic push failed") for u in updates]
        for update in todo:
            judged = 0
            if not update.deleted:
                # What pre-receive walked (None: walked again here, the objects are in the repo now).
                with admission.phase(admission.EFFECTS):
                    judged = len(admission.admit(hub, session, locked, update.ref,
                                                 None if update.created else update.old, update.new, git=git,
                                                 options=options, brought=brought.get(update.ref),
                                                 content_checked=True).new_commits)
            _record(session, locked, git, update, judged)
        if todo:
            locked.last_modified = utcnow()
        session.flush()
        moved: list[RefUpdate] = []
        try:
            for update in todo:
                _move(git, update.ref, update.old, update.new)
                moved.append(update)
        except Conflict:
            for update in reversed(moved):
                _move(git, update.ref, update.new, update.old)
            raise
        for update in todo:
            results[update.ref] = RefResult(update.ref, True)
    return [results[u.ref] for u in updates]
