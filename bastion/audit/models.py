"""The audit_events table: append-only, each row chained to the previous by hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_target", "target_type", "target_id"),
        Index("ix_audit_events_actor", "actor_id"),
        # An org's (a user's) log read newest first in keyset pages (bastion.audit.query).
        Index("ix_audit_events_namespace_id", "namespace", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor_name: Mapped[str | None] = mapped_column(String(96), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    via: Mapped[str] = mapped_column(String(16), default="api")
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(300))
    # Namespace (user or org) the event belongs to, for per-org audit log exports.
    namespace: Mapped[str | None] = mapped_column(String(96), nullable=True, index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # bastion.audit.chain: 1 = unkeyed SHA-256 links (events before the keyed chain), 2 = keyed (mac).
    chain_version: Mapped[int] = mapped_column(Integer, default=2, server_default="1")
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set when an organization's retention removed this event's content: its link and MAC stay (the chain
    # still verifies), and the keyed purge event it names counts every event it emptied.
    purged_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Set when an account deletion pseudonymised this event's personal fields: the keyed redaction event it
    # names lists this event with its original hash and the hash of its redacted content (bastion.audit.chain).
    redacted_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AuditAnchor(Base):
    """Where the chain now starts: the last event retention removed (one row, keyed like an event), so the
    first remaining event still links to something the verifier can trust."""

    __tablename__ = "audit_anchor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)  # events in the chain through last_event_id
    key_id: Mapped[str] = mapped_column(String(16))
    mac: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditCheckpoint(Base):
    """A signed statement (the instance key, SSH signature) of the chain's head: last event, its hash, count."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    public_key: Mapped[str] = mapped_column(String(200))
    signature: Mapped[str] = mapped_column(Text)


class AuditSink(Base):
    """Where events are streamed: an HTTPS webhook or a syslog receiver (TCP or TLS)."""

    __tablename__ = "audit_sinks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook | syslog
    url: Mapped[str] = mapped_column(String(500))  # https://… | tcp://host:port | tls://host:port
    secret: Mapped[str | None] = mapped_column(String(300), nullable=True)  # webhook: sealed (secretbox)
    namespace: Mapped[str | None] = mapped_column(String(96), nullable=True)  # only this user's or org's events
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditOutbox(Base):
    """One event still to deliver to one sink, written in the event's own transaction (at-least-once)."""

    __tablename__ = "audit_outbox"
    __table_args__ = (Index("ix_audit_outbox_due", "sink_id", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sink_id: Mapped[int] = mapped_column(ForeignKey("audit_sinks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    state: Mapped[str] = mapped_column(String(8), default="pending")  # pending | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class AuditAggregate(Base):
    """Repeats of one audited failure (failed authentications per source and reason, denied token uses
    per token and reason) within a window: one event was written when the window opened, the repeats
    since are counted here and reported, with their count, by the next event for the same key."""

    __tablename__ = "audit_aggregates"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the key's last event
    pending: Mapped[int] = mapped_column(Integer, default=0)  # repeats since, in no event yet
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The latest repeat, as the event that reports the pending ones will describe it.
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(300))
    namespace: Mapped[str | None] = mapped_column(String(96), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # ip, user agent, actor
