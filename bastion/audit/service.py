"""record(): the one way to write an audit event; verify_chain(): proof nothing was altered.

Each event is linked to the one before it (bastion.audit.chain, version 2: consecutive ids, a public
SHA-256 link and an HMAC under the audit key) and queued, in the same transaction, for every sink that
streams events (the outbox: bastion.audit.delivery sends it after the commit, never in the request).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from bastion.audit import chain
from bastion.audit.actions import AuditAction
from bastion.audit.context import current_context
from bastion.audit.models import AuditAnchor, AuditEvent, AuditOutbox, AuditSink
from bastion.db import utcnow

GENESIS = chain.GENESIS


def head(session: Session) -> tuple[int, str, int]:
    """The chain's last link: (id, hash, events through it); the anchor when retention removed them all."""
    last = session.execute(select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).first()
    if last is not None:
        return int(last.id), last.hash, 0
    anchor = session.get(AuditAnchor, 1)
    if anchor is not None:
        return int(anchor.last_event_id), anchor.last_hash, int(anchor.count)
    return 0, GENESIS, 0


def record(session: Session, action: AuditAction, *, target: tuple[str, str], namespace: str | None = None,
           details: dict[str, Any] | None = None) -> AuditEvent:
    """Add an audit event to the caller's transaction (it commits or rolls back with the act)."""
    ctx = current_context()
    keyring = chain.keyring_for(session)
    lock_chain(session)
    prev_id, prev, _ = head(session)
    ev = AuditEvent(
        id=prev_id + 1, created_at=utcnow(), action=str(action),
        actor_id=ctx.actor_id, actor_name=ctx.actor_name, ip=ctx.ip,
        user_agent=(ctx.user_agent or "")[:512] or None, token_id=ctx.token_id, request_id=ctx.request_id,
        via=ctx.via, target_type=target[0], target_id=target[1][:300], namespace=namespace,
        details=details or {}, prev_hash=prev, chain_version=chain.V2, key_id=keyring.current,
    )
    ev.hash = chain.link_hash(chain.chain_record(ev))
    ev.mac = keyring.mac(ev.key_id or "", ev.hash)
    session.add(ev)
    # The outbox: one row per sink that takes this event, committed with it (at-least-once delivery).
    sinks = session.scalars(select(AuditSink.id).where(
        AuditSink.enabled.is_(True), or_(AuditSink.namespace.is_(None), AuditSink.namespace == namespace)))
    for sink_id in sinks:
        session.add(AuditOutbox(sink_id=sink_id, event_id=ev.id, state="pending", attempts=0,
                                next_attempt_at=ev.created_at))
    session.flush()
    return ev


def lock_chain(session: Session) -> None:
    """Serialise writers of the chain until the transaction ends: each event links to exactly one
    predecessor (SQLite's writers are serialised already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7420815)"))


BATCH = 5000


def chain_records(session: Session, after_id: int = 0, through_id: int | None = None) -> Iterator[dict[str, Any]]:
    """Every event as a chain record, in id order, read in keyset batches (constant memory)."""
    cols = [AuditEvent.id, AuditEvent.chain_version, AuditEvent.key_id, AuditEvent.created_at, AuditEvent.action,
            AuditEvent.actor_id, AuditEvent.actor_name, AuditEvent.ip, AuditEvent.user_agent, AuditEvent.token_id,
            AuditEvent.via, AuditEvent.target_type, AuditEvent.target_id, AuditEvent.namespace, AuditEvent.details,
            AuditEvent.prev_hash, AuditEvent.hash, AuditEvent.mac, AuditEvent.purged_by,
            AuditEvent.redacted_by]
    while True:
        query = select(*cols).where(AuditEvent.id > after_id).order_by(AuditEvent.id).limit(BATCH)
        if through_id is not None:
            query = query.where(AuditEvent.id <= through_id)
        rows = session.execute(query).all()
        for row in rows:
            rec = chain.chain_record(row)
            rec["purged_by"] = row.purged_by
            if row.redacted_by is not None:
                rec["redacted_by"] = row.redacted_by
            yield rec
        if len(rows) < BATCH:
            return
        after_id = rows[-1].id


def anchor_of(session: Session) -> chain.Anchor:
    """The verified start of the chain: the genesis, or the keyed anchor retention left (a forged one fails)."""
    row = session.get(AuditAnchor, 1)
    if row is None:
        return chain.Anchor()
    keyring = chain.keyring_for(session)
    if row.key_id not in keyring.keys or keyring.mac(row.key_id, chain.anchor_link(
            row.last_event_id, row.last_hash, row.count)) != row.mac:
        raise chain.AuditKeyError("the chain's anchor (where retention cut it) does not carry a valid MAC: it was "
                                  "edited in the database")
    return chain.Anchor(int(row.last_event_id), row.last_hash, int(row.count))


def verify_chain(session: Session) -> int | None:
    """Return the id of the first event that is wrong, or None when intact (`verify` says what is wrong)."""
    problem = verify(session).problem
    return problem.event_id if problem is not None else None


def verify(session: Session, *, on_good: Any = None) -> chain.Walk:
    """Walk the whole chain from its anchor with the audit key; stops at the first problem."""
    keyring = chain.keyring_for(session)
    try:
        anchor = anchor_of(session)
    except chain.AuditKeyError as exc:
        walk = chain.Walk(0, GENESIS, 0)
        walk.problem = chain.Problem(0, "anchor", str(exc))
        return walk
    return chain.verify_records(chain_records(session, anchor.last_id), anchor=anchor, keyring=keyring,
                                on_good=on_good)
