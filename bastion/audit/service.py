"""record(): the one way to write an audit event; verify_chain(): proof nothing was altered."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bastion.audit.actions import AuditAction
from bastion.audit.context import current_context
from bastion.audit.models import AuditEvent
from bastion.db import utcnow

GENESIS = "0" * 64


def _digest(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(prev_hash.encode() + b"\n" + payload.encode()).hexdigest()


def _chained_fields(ev: AuditEvent) -> dict[str, Any]:
    return {
        "created_at": ev.created_at.isoformat(), "action": ev.action, "actor_id": ev.actor_id,
        "actor_name": ev.actor_name, "ip": ev.ip, "user_agent": ev.user_agent, "token_id": ev.token_id,
        "via": ev.via, "target_type": ev.target_type, "target_id": ev.target_id, "namespace": ev.namespace,
        "details": ev.details,
    }


def record(session: Session, action: AuditAction, *, target: tuple[str, str], namespace: str | None = None,
           details: dict[str, Any] | None = None) -> AuditEvent:
    """Add an audit event to the caller's transaction (it commits or rolls back with the act)."""
    ctx = current_context()
    lock_chain(session)
    prev = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or GENESIS
    ev = AuditEvent(
        created_at=utcnow(), action=str(action),
        actor_id=ctx.actor_id, actor_name=ctx.actor_name, ip=ctx.ip,
        user_agent=(ctx.user_agent or "")[:512] or None, token_id=ctx.token_id, request_id=ctx.request_id,
        via=ctx.via, target_type=target[0], target_id=target[1][:300], namespace=namespace,
        details=details or {}, prev_hash=prev,
    )
    ev.hash = _digest(prev, _chained_fields(ev))
    session.add(ev)
    session.flush()
    return ev


def lock_chain(session: Session) -> None:
    """Serialise writers of the chain until the transaction ends: each event links to exactly one
    predecessor (SQLite's writers are serialised already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7420815)"))


def verify_chain(session: Session) -> int | None:
    """Return the id of the first event whose hash does not match, or None when intact."""
    prev = GENESIS
    for ev in session.scalars(select(AuditEvent).order_by(AuditEvent.id)):
        if ev.prev_hash != prev or ev.hash != _digest(prev, _chained_fields(ev)):
            return ev.id
        prev = ev.hash
    return None
