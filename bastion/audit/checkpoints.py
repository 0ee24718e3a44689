"""Signed checkpoints of the audit chain: (last event, its hash, events through it, time) under the instance key.

A checkpoint is written once `audit_checkpoint_every` events were recorded since the last one, or after
`audit_checkpoint_interval_seconds` when any were (`maybe_write`, run by the audit worker), and at every
retention cut. Its signature is an SSH signature (bastion.audit.sshsig) by the instance key, which
bastion.signing hands over at start-up (`use_instance_key`). With the checkpoints and the instance's
public key, an export is verified outside Bastion: its hashes recomputed, its links followed, and every
checkpoint's hash and count found at its event; a truncated export fails at the last checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import chain, sshsig
from bastion.audit.models import AuditCheckpoint, AuditEvent
from bastion.audit.service import anchor_of, head, lock_chain
from bastion.db import transaction

_signer: sshsig.Signer | None = None


def use_instance_key(key_file: Path) -> None:
    """Sign checkpoints with the instance key (bastion.signing calls this once it has loaded the key)."""
    global _signer
    _signer = sshsig.Signer(key_file)


def signer() -> sshsig.Signer:
    if _signer is None:
        raise RuntimeError("the instance key is not loaded: checkpoints cannot be signed (bastion.signing.install)")
    return _signer


def payload(last_event_id: int, last_hash: str, count: int, created_at: str) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return (f"bastion audit checkpoint v1\nlast_event_id {last_event_id}\nlast_hash {last_hash}\n"
            f"count {count}\ncreated_at {created_at}\n").encode()


def as_json(cp: AuditCheckpoint) -> dict[str, Any]:
    return {"lastEventId": int(cp.last_event_id), "lastHash": cp.last_hash, "count": int(cp.count),
            "createdAt": cp.created_at.isoformat(), "publicKey": cp.public_key, "signature": cp.signature}


def export_document(session: Session) -> dict[str, Any]:
    """Every checkpoint and what verifies them (`bastion audit checkpoints`, GET /api/admin/audit/checkpoints)."""
    cps = [as_json(c) for c in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id))]
    return {"format": "bastion-audit-checkpoints/1", "namespace": sshsig.NAMESPACE,
            "publicKey": signer().public_key, "checkpoints": cps}


def _base(session: Session) -> tuple[int, int]:
    """(last event id, count) of the latest checkpoint or of the anchor, whichever is later."""
    last = session.execute(select(AuditCheckpoint.last_event_id, AuditCheckpoint.count)
                           .order_by(AuditCheckpoint.id.desc()).limit(1)).first()
    anchor = anchor_of(session)
    if last is None or int(last.last_event_id) < anchor.last_id:
        return anchor.last_id, anchor.count
    return int(last.last_event_id), int(last.count)


def write(session: Session, now: datetime) -> AuditCheckpoint | None:
    """Sign the chain's head now (in the caller's transaction); None when no event was added since."""
    lock_chain(session)
    last_id, last_hash, _ = head(session)
    base_id, base_count = _base(session)
    if last_id <= base_id and session.scalar(select(func.count()).select_from(AuditCheckpoint)):
        return None
    count = base_count + int(session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.id > base_id, AuditEvent.id <= last_id)) or 0)
    key = signer()
    created = now.isoformat()
    cp = AuditCheckpoint(last_event_id=last_id, last_hash=last_hash, count=count, created_at=now,
                         public_key=key.public_key, signature=key.sign(payload(last_id, last_hash, count, created)))
    session.add(cp)
    session.flush()
    return cp


def due(session: Session, now: datetime, every: int, interval: timedelta) -> bool:
    last = session.execute(select(AuditCheckpoint.last_event_id, AuditCheckpoint.created_at)
                           .order_by(AuditCheckpoint.id.desc()).limit(1)).first()
    after = int(last.last_event_id) if last is not None else 0
    pending = session.scalar(select(func.count()).select_from(
        select(AuditEvent.id).where(AuditEvent.id > after).limit(every).subquery())) or 0
    if pending >= every:
        return True
    return bool(pending) and (last is None or now - last.created_at >= interval)


def maybe_write(sessions: sessionmaker[Session], now: datetime, every: int, interval: timedelta) -> bool:
    with transaction(sessions, readonly=True) as session:  # SQLite: no write lock unless one is due
        if not due(session, now, every, interval):
            return False
    with transaction(sessions) as session:
        return write(session, now) is not None


# ---- verification -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    last_event_id: int
    last_hash: str
    count: int
    created_at: str
    signature: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Checkpoint:
        return cls(int(d["lastEventId"]), str(d["lastHash"]), int(d["count"]), str(d["createdAt"]),
                   str(d["signature"]))

    def signed_by(self, public: Any) -> bool:
        return sshsig.verify(self.signature, payload(self.last_event_id, self.last_hash, self.count,
                                                     self.created_at), public)


def load_file(path: Path) -> list[Checkpoint]:
    data = json.loads(path.read_text())
    items = data["checkpoints"] if isinstance(data, dict) else data
    return [Checkpoint.from_json(d) for d in items]


class CheckpointCheck:
    """Compares a chain walk with signed checkpoints: each must be signed by `public`, and name an event the
    walk reaches with the same hash and count; `finish` reports a chain that ends before a checkpoint."""

    def __init__(self, checkpoints: Iterable[Checkpoint], public: Any, start: chain.Anchor) -> None:
        self.by_id: dict[int, Checkpoint] = {}
        self.problem: chain.Problem | None = None
        self.matched = 0
        for cp in sorted(checkpoints, key=lambda c: c.last_event_id):
            if not cp.signed_by(public):
                self.problem = self.problem or chain.Problem(cp.last_event_id, "checkpoint",
                                                             "its checkpoint's signature is not the instance key's")
            elif cp.last_event_id > start.last_id:
                self.by_id[cp.last_event_id] = cp
            elif cp.last_event_id == start.last_id:
                if (cp.last_hash, cp.count) != (start.last_hash, start.count):
                    self.problem = self.problem or chain.Problem(cp.last_event_id, "checkpoint",
                                                                 "the chain's start does not match its checkpoint")
                self.matched += 1

    def on_good(self, walk: chain.Walk) -> chain.Problem | None:
        cp = self.by_id.pop(walk.last_id, None)
        if cp is None:
            return None
        self.matched += 1
        if cp.last_hash != walk.last_hash:
            return chain.Problem(walk.last_id, "checkpoint", "its hash is not the one its signed checkpoint names "
                                                             "(this event or one before it was rewritten)")
        if cp.count != walk.count:
            return chain.Problem(walk.last_id, "deleted", f"its signed checkpoint counts {cp.count} events through "
                                                          f"it, the chain has {walk.count}")
        return None

    def finish(self, walk: chain.Walk) -> chain.Problem | None:
        if self.by_id:
            first = min(self.by_id)
            return chain.Problem(walk.last_id + 1, "deleted", f"the chain ends at event {walk.last_id}, but a signed "
                                                              f"checkpoint names event {first}")
        return None


def verify_walk(run: Callable[[Any], chain.Walk], check: CheckpointCheck) -> chain.Walk:
    """Run a walk (`run(on_good)`) against the checkpoints; the first problem of either wins."""
    if check.problem is not None:
        walk = chain.Walk(0, chain.GENESIS, 0)
        walk.problem = check.problem
        return walk
    walk = run(check.on_good)
    if walk.problem is None:
        walk.problem = check.finish(walk)
    return walk


def verify_database(session: Session, public: Any) -> chain.Walk:
    """`bastion audit verify`: the chain with the audit key, and every stored checkpoint with the instance key."""
    from bastion.audit.service import verify

    try:
        start = anchor_of(session)
    except chain.AuditKeyError:
        start = chain.Anchor()
    cps = [Checkpoint(int(c.last_event_id), c.last_hash, int(c.count), c.created_at.isoformat(), c.signature)
           for c in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id))]
    return verify_walk(lambda on_good: verify(session, on_good=on_good), CheckpointCheck(cps, public, start))


def verify_export(lines: Iterable[bytes | str], checkpoints: list[Checkpoint], public: Any) -> chain.Walk:
    """The standalone verifier: an export (NDJSON chain records, as the retention archive and `bastion audit
    export-chain` write them; an `anchor` line where it starts after a retention cut) against signed
    checkpoints, without the audit key or the database."""
    records = chain.iter_ndjson(lines)
    first = next(records, None)
    start = chain.Anchor()
    inline: list[Checkpoint] = []
    pending: list[dict[str, Any]] = []
    if first is not None and first.get("type") == "anchor":
        start = chain.Anchor(int(first["last_id"]), str(first["last_hash"]), int(first["count"]))
    elif first is not None:
        pending.append(first)

    def events() -> Iterable[dict[str, Any]]:
        for rec in [*pending, *records]:
            if rec.get("type") == "checkpoint":
                inline.append(Checkpoint.from_json(rec))
                continue
            yield rec.get("chain", rec)

    # Checkpoints carried inside the file (an archive's cut) count too; they are read as the walk reaches them.
    check = CheckpointCheck(checkpoints, public, start)
    if start.last_id and check.matched == 0:
        walk = chain.Walk(start.last_id, start.last_hash, start.count)
        walk.problem = chain.Problem(start.last_id + 1, "checkpoint", f"the export starts after event "
                                     f"{start.last_id}, which no signed checkpoint confirms")
        return walk
    walk = verify_walk(lambda on_good: chain.verify_records(events(), anchor=start, on_good=on_good), check)
    if walk.problem is None:
        for cp in inline:
            if not cp.signed_by(public):
                walk.problem = chain.Problem(cp.last_event_id, "checkpoint", "its checkpoint's signature is not "
                                                                            "the instance key's")
            elif cp.last_event_id == walk.last_id and (cp.last_hash, cp.count) != (walk.last_hash, walk.count):
                walk.problem = chain.Problem(cp.last_event_id, "checkpoint", "does not match its signed checkpoint")
    return walk
