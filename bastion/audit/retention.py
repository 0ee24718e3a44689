"""Retention: events older than the instance's period are archived, then removed; an organization's shorter
period empties its events in place. Either way the chain still verifies.

Instance cut (`purge_instance`): the oldest events form a prefix of the chain. It is written to a gzip
NDJSON archive (an `anchor` line where it starts, every chain record, and a signed `checkpoint` line for its
last event), then deleted in one transaction that moves the keyed anchor (`audit_anchor`) to the last
removed event, stores that checkpoint and records `instance.audit_log.purge` with the counts. Verification
then starts at the anchor; the archive verifies on its own against the checkpoints (its anchor is the
previous cut's checkpoint, or the genesis).

Organization retention (`purge_org`): the org's events past its period are archived, then emptied: their
link, hash and MAC stay, their content goes, and each names the `org.audit_log.purge` event that emptied
it, whose keyed details count them, so emptying another event to hide it does not verify.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import chain, checkpoints
from bastion.audit.actions import AuditAction
from bastion.audit.context import AuditContext, bind_context
from bastion.audit.models import AuditAnchor, AuditCheckpoint, AuditEvent, AuditOutbox
from bastion.audit.service import anchor_of, chain_records, lock_chain, record
from bastion.db import transaction
from bastion.errors import BadRequest

# The periods an organization may choose (days); None follows the instance's.
ORG_CHOICES = (7, 30, 90, 180, 365, 730, 1825)
SYSTEM = AuditContext(via="system", actor_name="bastion")


def check_org_days(value: Any, instance_days: int) -> int | None:
    """An organization's retention as the instance can enforce it, or a 400 saying which it can."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in ORG_CHOICES:
        raise BadRequest(f"auditLogRetentionDays must be null (the instance's period) or one of "
                         f"{', '.join(map(str, ORG_CHOICES))} days")
    if instance_days and value > instance_days:
        raise BadRequest(f"This instance keeps audit events for {instance_days} days: an organization may keep "
                         f"them for at most that long")
    return value


@dataclass(frozen=True)
class Cut:
    through_id: int
    deleted: int
    archive: Path


def _archive_path(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / name


def _write_archive(path: Path, lines: Any) -> None:
    """gzip NDJSON written to a temporary name, synced, then renamed: an archive is whole or absent."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _cut_point(session: Session, before: datetime, after_id: int) -> int:
    """The last event of the prefix older than `before` (and never one a sink still waits for)."""
    first_kept = session.scalar(select(func.min(AuditEvent.id)).where(AuditEvent.id > after_id,
                                                                      AuditEvent.created_at >= before))
    last = session.scalar(select(func.max(AuditEvent.id))) or after_id
    through = (first_kept - 1) if first_kept is not None else last
    waiting = session.scalar(select(func.min(AuditOutbox.event_id)).where(AuditOutbox.state == "pending"))
    if waiting is not None:
        through = min(through, waiting - 1)
    return int(through)


def purge_instance(sessions: sessionmaker[Session], archive_dir: Path, days: int, now: datetime) -> Cut | None:
    if days <= 0:
        return None
    before = now - timedelta(days=days)
    with transaction(sessions, readonly=True) as session:
        anchor = anchor_of(session)
        through = _cut_point(session, before, anchor.last_id)
        if through <= anchor.last_id:
            return None
        last = session.execute(select(AuditEvent.hash).where(AuditEvent.id == through)).scalar_one()
        count = anchor.count + int(session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.id > anchor.last_id, AuditEvent.id <= through)) or 0)
        stamp = now.isoformat()
        signer = checkpoints.signer()
        cp = {"type": "checkpoint", "lastEventId": through, "lastHash": last, "count": count, "createdAt": stamp,
              "publicKey": signer.public_key,
              "signature": signer.sign(checkpoints.payload(through, last, count, stamp))}
        path = _archive_path(archive_dir, f"audit-{anchor.last_id + 1:012d}-{through:012d}.ndjson.gz")
        head = {"type": "anchor", "last_id": anchor.last_id, "last_hash": anchor.last_hash, "count": anchor.count}
        _write_archive(path, [head, *chain_records(session, anchor.last_id, through), cp])
    with bind_context(SYSTEM), transaction(sessions) as session:
        lock_chain(session)
        if anchor_of(session) != anchor:
            return None  # another process cut first; its archive stands
        deleted = session.execute(delete(AuditEvent).where(AuditEvent.id <= through)).rowcount or 0
        session.execute(delete(AuditOutbox).where(AuditOutbox.event_id <= through))
        ring = chain.keyring_for(session)
        row = session.get(AuditAnchor, 1) or AuditAnchor(id=1)
        row.last_event_id, row.last_hash, row.count = through, last, count
        row.key_id, row.created_at = ring.current, now
        row.mac = ring.mac(ring.current, chain.anchor_link(through, last, count))
        session.add(row)
        session.add(AuditCheckpoint(last_event_id=through, last_hash=last, count=count, created_at=now,
                                    public_key=cp["publicKey"], signature=cp["signature"]))
        session.flush()
        record(session, AuditAction.INSTANCE_AUDIT_PURGE, target=("instance", "audit_log"),
               details={"deleted": int(deleted), "throughId": through, "throughHash": last, "count": count,
                        "olderThan": before.isoformat(), "retentionDays": days, "archive": path.name})
    return Cut(through, int(deleted), path)


def purge_org(sessions: sessionmaker[Session], archive_dir: Path, org: str, days: int, now: datetime) -> int:
    """Archive and empty `org`'s events older than `days`; returns how many were emptied."""
    before = now - timedelta(days=days)
    where = (AuditEvent.namespace == org, AuditEvent.created_at < before, AuditEvent.purged_by.is_(None),
             AuditEvent.action != str(AuditAction.ORG_AUDIT_PURGE))
    with transaction(sessions, readonly=True) as session:
        ids = list(session.scalars(select(AuditEvent.id).where(*where).order_by(AuditEvent.id)))
        waiting = session.scalar(select(func.min(AuditOutbox.event_id)).where(AuditOutbox.state == "pending"))
        if waiting is not None:
            ids = [i for i in ids if i < waiting]
        if not ids:
            return 0
        path = _archive_path(archive_dir, f"org-{org}-{ids[0]:012d}-{ids[-1]:012d}.ndjson.gz")
        records = (r for r in chain_records(session, ids[0] - 1, ids[-1]) if r["id"] in set(ids))
        _write_archive(path, records)
    with bind_context(SYSTEM), transaction(sessions) as session:
        lock_chain(session)
        ev = record(session, AuditAction.ORG_AUDIT_PURGE, target=("org", org), namespace=org,
                    details={"emptied": len(ids), "olderThan": before.isoformat(), "retentionDays": days,
                             "archive": path.name, "firstId": ids[0], "lastId": ids[-1]})
        for start in range(0, len(ids), 500):
            session.execute(update(AuditEvent).where(AuditEvent.id.in_(ids[start:start + 500]),
                                                     AuditEvent.purged_by.is_(None)).values(
                purged_by=ev.id, actor_id=None, actor_name=None, ip=None, user_agent=None, token_id=None,
                request_id=None, target_id="", details={}))
    return len(ids)


def run(sessions: sessionmaker[Session], archive_dir: Path, instance_days: int, org_days: dict[str, int],
        now: datetime) -> dict[str, Any]:
    """One retention pass: every organization's period, then the instance's."""
    emptied = {org: n for org, days in sorted(org_days.items())
               if (n := purge_org(sessions, archive_dir, org, days, now))}
    cut = purge_instance(sessions, archive_dir, instance_days, now)
    return {"emptied": emptied, "deleted": cut.deleted if cut else 0}
