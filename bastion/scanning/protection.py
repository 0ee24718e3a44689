"""Secret push protection: a commit that adds a secret the repo's mode refuses does not land.

Runs while a push is judged (its objects quarantined): added lines of text, new strings of binaries,
files above the diff bound streamed whole, and the messages of the commits and tag it brings in.
The mode (repo or org setting `secretPushProtectionMode`, repos.service.secret_push_protection_mode)
says which findings refuse it: `verified-only`, secrets verified live or by their checksum;
`high-confidence` (the default), also formats whose match alone is strong evidence (a distinctive
provider token, an AWS key id found with its secret key: detectors.HIGH_CONFIDENCE); `all`, every
finding of the secret scanner. A secret its provider says is revoked refuses nothing in any mode.
"""

from __future__ import annotations

import bisect
import difflib
import io
from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.authz.policy import DEFAULT_SECRET_PUSH_PROTECTION_MODE
from bastion.db import after_commit, after_rollback, transaction
from bastion.errors import Forbidden
from bastion.hub import Hub
from bastion.lfs.content import ObjectNotLinked, iter_object
from bastion.repos.commit import CommitResult
from bastion.repos.models import Repo
from bastion.scanning import leaks
from bastion.scanning.adapters import SecretsScannerAdapter, scanners_of
from bastion.scanning.scanners.secrets import (
    BASTION_TOKEN_DETECTOR,
    SecretFinding,
    SecretScanner,
)
from bastion.scanning.scanners.secrets.formats import decode_text
from bastion.storage.gitstore import LFS_POINTER_MAX, parse_lfs_pointer


def added_lines_text(old: bytes | None, new: bytes) -> str:
    """`new` with every line that was already in `old` blanked: line numbers stay those of the file."""
    new_lines = new.decode("utf-8", "replace").splitlines()
    if old is None:
        return "\n".join(new_lines)
    old_lines = old.decode("utf-8", "replace").splitlines()
    keep = [""] * len(new_lines)
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            keep[j1:j2] = new_lines[j1:j2]
    return "\n".join(keep)


def refuses(finding: SecretFinding, mode: str) -> bool:
    """Whether push protection in `mode` refuses a commit that adds `finding`."""
    if finding.verification != "none":
        return finding.verified  # checked (checksum, or the provider's API): live refuses, revoked never
    if mode == "all":
        return True
    return mode == "high-confidence" and finding.confidence == "high"


def check_new_secrets(hub: Hub, session: Session, repo: Repo, result: CommitResult,
                      mode: str = DEFAULT_SECRET_PUSH_PROTECTION_MODE) -> None:
    """Push protection: a commit that adds a secret `mode` refuses does not land."""
    scanners = scanners_of(hub)
    adapter = scanners.get("secrets")
    scanner = adapter.scanner if isinstance(adapter, SecretsScannerAdapter) else SecretScanner()
    git = hub.git(repo.storage_key)
    parent = git.repo[result.parent_oid] if result.parent_oid else None
    blocked = []
    diff_max = hub.settings.push_protection_diff_max_bytes
    for path, git_oid in result.changed_blobs:
        try:
            old_oid = str(parent.tree[path].id) if parent is not None else None
        except KeyError:
            old_oid = None
        if _content_size(git, git_oid) > diff_max or (old_oid and _content_size(git, old_oid) > diff_max):
            # Read whole, streamed in bounded memory: a secret counts when the old version lacked it.
            added = _streamed_added_secrets(hub, session, repo.id, scanner, git, old_oid, git_oid, path)
        else:
            new = _protected_content(hub, session, repo.id, git, git_oid)
            if new is None:
                continue  # a pointer to nothing this repo holds: the commit path refuses it
            old = _protected_content(hub, session, repo.id, git, old_oid) if old_oid else None
            added = _added_secrets(scanner, old, new, path)
        blocked += [f for f in added if refuses(f, mode)]
    blocked += [f for f in _message_secrets(scanner, git, result) if refuses(f, mode)]
    if not blocked:
        return
    described = [{"file": f.file, "line": f.line, "type": f.secret_type, "provider": f.provider} for f in blocked]
    target = ("repo", f"{repo.type}/{repo.repo_id}")
    # A live Bastion token that lands (a bypass) is revoked: it is published. A refused push publishes
    # nothing (its objects are dropped with the quarantine), so the token stays as its owner left it.
    live = [f.raw_secret for f in blocked if f.detector == BASTION_TOKEN_DETECTOR]
    revoke = partial(leaks.revoke_leaked, hub, live, source="secret push protection",
                     where=f"{target[1]}: " + ", ".join(sorted({f.file for f in blocked}))[:200]) if live else None
    reason = result.options.get("secrets_bypass")
    if reason:
        audit.record(session, AuditAction.SECRET_PUSH_BYPASS, target=target, namespace=repo.namespace,
                     details={"reason": reason, "commit": result.commit_oid, "findings": described})
        if revoke is not None:
            after_commit(session, revoke)
            after_rollback(session, revoke)
        return
    after_rollback(session, partial(_record_secret_block, hub, target, repo.namespace, described))
    where = "; ".join(f"{d['file']}:{d['line']} ({d['type']})" for d in described[:10])
    raise Forbidden(f"Push protection: this commit adds secrets: {where}. Remove them, or, if this is a test "
                    "credential, retry with a bypass reason (repository managers only).")


# Messages are scanned in batches of about this many characters (one scan per batch, not per commit).
_MESSAGE_BATCH = 8 << 20


def _message_secrets(scanner: SecretScanner, git: Any, result: CommitResult) -> list[SecretFinding]:
    """Secrets in the messages of the commits the move brings in and of the annotated tag it writes:
    findings name "commit <sha> message" (or "tag <ref> message") and the line in that message."""
    parts: list[tuple[str, str]] = []
    for sha in result.new_commits:
        try:
            parts.append((f"commit {sha[:12]} message", git.repo[sha].message or ""))
        except (KeyError, ValueError):
            continue
    if result.tag_message:
        parts.append((f"tag {result.ref_name.removeprefix('refs/tags/')} message", result.tag_message))
    found: list[SecretFinding] = []
    batch: list[tuple[str, str]] = []
    size = 0
    for label, message in parts + [("", "")]:
        if (size + len(message) > _MESSAGE_BATCH or not label) and batch:
            found += _scan_messages(scanner, batch)
            batch, size = [], 0
        if label:
            batch.append((label, message.rstrip("\n")))
            size += len(message)
    return found


def _scan_messages(scanner: SecretScanner, batch: list[tuple[str, str]]) -> list[SecretFinding]:
    starts: list[int] = []
    line = 1
    for _label, message in batch:
        starts.append(line)
        line += message.count("\n") + 1
    out = []
    for f in scanner.scan_text("\n".join(m for _, m in batch), "commit message"):
        i = bisect.bisect_right(starts, f.line) - 1
        out.append(replace(f, file=batch[i][0], line=f.line - starts[i] + 1,
                           end_line=max(f.end_line, f.line) - starts[i] + 1))
    return out


def _added_secrets(scanner: SecretScanner, old: bytes | None, new: bytes, path: str) -> list[SecretFinding]:
    """The secrets `new` adds to `old`: in text, those on added lines; in binary content, those among
    its printable strings that the old version did not hold."""
    if decode_text(new) is not None:
        return scanner.scan_text(added_lines_text(old, new), path)
    found = scanner.scan_strings(new, path)
    if old is None or not found:
        return found
    before = {f.raw_secret for f in scanner.scan_strings(old, path)}
    return [f for f in found if f.raw_secret not in before]


def _content_size(git: Any, git_oid: str) -> int:
    """The size of a file's content: the blob's, or that of the LFS object its pointer names."""
    _kind, size = git.repo.odb.read_header(git_oid)
    if size <= LFS_POINTER_MAX:
        pointer = parse_lfs_pointer(git.repo[git_oid].data)
        if pointer is not None:
            return int(pointer.size)
    return int(size)


def _content_pieces(hub: Hub, session: Session, repo_id: int, git: Any, git_oid: str) -> Iterable[bytes] | None:
    """The bytes push protection reads for a file, as pieces: the blob, or the LFS object its pointer
    names (secrets in a large notebook or JSON file stored with LFS must not slip through); None for a
    pointer to an object the repo holds no link to (the commit path refuses such pointers; one in the
    parent, from before that rule, names nothing readable) or no longer stored."""
    _kind, size = git.repo.odb.read_header(git_oid)
    data: bytes = git.repo[git_oid].data
    pointer = parse_lfs_pointer(data) if size <= LFS_POINTER_MAX else None
    if pointer is None:
        return [data]
    try:
        return iter_object(hub, repo_id, pointer.oid, session=session)
    except ObjectNotLinked:
        return None


def _protected_content(hub: Hub, session: Session, repo_id: int, git: Any, git_oid: str) -> bytes | None:
    pieces = _content_pieces(hub, session, repo_id, git, git_oid)
    return None if pieces is None else b"".join(pieces)


class _PieceReader(io.RawIOBase):
    """A read()-able file over an iterator of byte pieces (an LFS object streamed from storage)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = iter(pieces)
        self.held = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.held) < n:
            piece = next(self.pieces, None)
            if piece is None:
                break
            self.held += piece
        out, self.held = (self.held, b"") if n < 0 else (self.held[:n], self.held[n:])
        return out


def _streamed_secrets(hub: Hub, session: Session, repo_id: int, scanner: SecretScanner, git: Any, git_oid: str,
                      path: str) -> list[SecretFinding]:
    pieces = _content_pieces(hub, session, repo_id, git, git_oid)
    if pieces is None:
        return []
    reader = _PieceReader(pieces)
    head = reader.read(8192)
    reader.held = head + reader.held
    if decode_text(head) is None:
        return scanner.scan_stream(reader, path)  # type: ignore[arg-type]
    return scanner.scan_text_stream(reader, path)  # type: ignore[arg-type]


def _streamed_added_secrets(hub: Hub, session: Session, repo_id: int, scanner: SecretScanner, git: Any,
                            old_oid: str | None, git_oid: str, path: str) -> list[SecretFinding]:
    """The secrets a file above the diff bound adds: those the new version holds anywhere and the old
    one did not (by the secret, not by line: a diff of such files is not computed)."""
    found = _streamed_secrets(hub, session, repo_id, scanner, git, git_oid, path)
    if not found or old_oid is None:
        return found
    before = {f.raw_secret for f in _streamed_secrets(hub, session, repo_id, scanner, git, old_oid, path)}
    return [f for f in found if f.raw_secret not in before]


def _record_secret_block(hub: Hub, target: tuple[str, str], namespace: str, described: list[dict[str, Any]]) -> None:
    with transaction(hub.sessions) as session:
        audit.record(session, AuditAction.SECRET_PUSH_BLOCKED, target=target, namespace=namespace,
                     details={"findings": described})
