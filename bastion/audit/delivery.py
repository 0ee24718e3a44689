"""Streaming audit events to a SIEM: HTTPS webhooks (HMAC-signed bodies) and syslog (RFC 5424 over TCP or TLS,
octet-counted frames, RFC 6587), fed from the outbox `record()` writes in each event's own transaction.

Delivery is at-least-once: a batch is claimed (its rows' next attempt pushed past a lease), sent outside any
transaction, then deleted; a failure pushes the next attempt back exponentially (2 s, 4 s, … at most an
hour) and after `audit_delivery_max_attempts` the rows are dead letters, listed for instance admins and sent
again when they re-drive them. Receivers de-duplicate by event id (webhook: `id` of each event; syslog:
`[meta sequenceId]`).

Webhook request: `POST url`, body `{"events": [...]}`, headers `X-Bastion-Timestamp: <unix seconds>` and
`X-Bastion-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; any 2xx is success.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit.models import AuditEvent, AuditOutbox, AuditSink
from bastion.db import transaction
from bastion.errors import BadRequest, NotFound
from bastion.secretbox import SealedValueError, SecretBox

BATCH = 100
LEASE = timedelta(seconds=60)  # a claimed batch is retried by anyone after this (a worker died mid-send)
BACKOFF_BASE = timedelta(seconds=2)
BACKOFF_MAX = timedelta(hours=1)
TIMEOUT = 10.0
FACILITY_AUTHPRIV = 10  # RFC 5424 facility 10: security/authorization messages
SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Bastion-Signature", "X-Bastion-Timestamp"


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: 2 s doubling, at most an hour."""
    return min(BACKOFF_BASE * (2 ** max(0, attempts - 1)), BACKOFF_MAX)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The webhook signature header's value (receivers recompute it and compare in constant time)."""
    return "sha256=" + hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


# ---- sinks --------------------------------------------------------------------------------------

def _box(secret_key: bytes) -> SecretBox:
    return SecretBox(secret_key, "audit-sink")


def validate_url(kind: str, url: str) -> str:
    if not isinstance(url, str) or len(url) > 500:
        raise BadRequest("'url' must be a string of at most 500 characters")
    parts = urlsplit(url.strip())
    if kind == "webhook":
        if parts.scheme != "https" or not parts.hostname:
            raise BadRequest("A webhook URL must be https://host[:port]/path (events are never sent in clear text)")
    elif kind == "syslog":
        if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port or parts.path not in ("", "/"):
            raise BadRequest("A syslog URL must be tcp://host:port or tls://host:port (RFC 5424 over TCP or TLS; "
                             "UDP is not supported)")
    else:
        raise BadRequest("'kind' must be 'webhook' or 'syslog'")
    return url.strip()


def create_sink(session: Session, secret_key: bytes, kind: str, url: str, secret: str | None,
                namespace: str | None) -> AuditSink:
    url = validate_url(kind, url)
    sealed = None
    if kind == "webhook":
        if not isinstance(secret, str) or len(secret) < 16 or len(secret) > 200:
            raise BadRequest("A webhook needs a 'secret' of 16 to 200 characters: its bodies are signed with it")
        sealed = _box(secret_key).seal(secret, url)
    elif secret is not None:
        raise BadRequest("'secret' is for webhooks: syslog messages are not signed (use tls:// to protect them)")
    if namespace is not None and (not isinstance(namespace, str) or not 0 < len(namespace) <= 96):
        raise BadRequest("'namespace' must be a user or organization name")
    sink = AuditSink(kind=kind, url=url, secret=sealed, namespace=namespace, enabled=True)
    session.add(sink)
    session.flush()
    return sink


def list_sinks(session: Session) -> list[AuditSink]:
    return list(session.scalars(select(AuditSink).order_by(AuditSink.id)))


def delete_sink(session: Session, sink_id: int) -> AuditSink:
    sink = session.get(AuditSink, sink_id)
    if sink is None:
        raise NotFound("No such audit sink")
    session.execute(delete(AuditOutbox).where(AuditOutbox.sink_id == sink_id))
    session.delete(sink)
    return sink


def sink_json(sink: AuditSink, session: Session) -> dict[str, Any]:
    from sqlalchemy import func

    counts = dict(session.execute(select(AuditOutbox.state, func.count()).where(AuditOutbox.sink_id == sink.id)
                                  .group_by(AuditOutbox.state)).all())
    return {"id": sink.id, "kind": sink.kind, "url": sink.url, "namespace": sink.namespace, "enabled": sink.enabled,
            "createdAt": sink.created_at.isoformat(), "pending": counts.get("pending", 0),
            "deadLetters": counts.get("dead", 0)}


def dead_letters(session: Session, limit: int = 1000) -> list[dict[str, Any]]:
    rows = session.execute(select(AuditOutbox, AuditSink.url, AuditEvent.action).join(
        AuditSink, AuditSink.id == AuditOutbox.sink_id).outerjoin(AuditEvent, AuditEvent.id == AuditOutbox.event_id)
        .where(AuditOutbox.state == "dead").order_by(AuditOutbox.id).limit(limit)).all()
    return [{"id": o.id, "sinkId": o.sink_id, "sinkUrl": url, "eventId": o.event_id, "type": action,
             "attempts": o.attempts, "lastError": o.last_error} for o, url, action in rows]


def redrive(session: Session, now: datetime, *, sink_id: int | None = None, ids: list[int] | None = None) -> int:
    """Send dead letters again (all, one sink's, or these): pending, attempts reset, due now."""
    query = update(AuditOutbox).where(AuditOutbox.state == "dead")
    if sink_id is not None:
        query = query.where(AuditOutbox.sink_id == sink_id)
    if ids is not None:
        query = query.where(AuditOutbox.id.in_(ids))
    result = session.execute(query.values(state="pending", attempts=0, next_attempt_at=now, last_error=None))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---- wire formats -------------------------------------------------------------------------------

def event_json(ev: AuditEvent) -> dict[str, Any]:
    return {"id": ev.id, "type": ev.action, "createdAt": ev.created_at.isoformat(), "data": ev.details,
            "ip": ev.ip, "userAgent": ev.user_agent, "via": ev.via, "namespace": ev.namespace,
            "target": {"type": ev.target_type, "id": ev.target_id},
            "author": {"_id": ev.actor_id, "user": ev.actor_name},
            "token": {"id": ev.token_id} if ev.token_id is not None else None, "hash": ev.hash}


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _ascii_field(value: str | None, limit: int) -> str:
    text = "".join(c for c in (value or "") if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def syslog_message(ev: AuditEvent, hostname: str) -> bytes:
    """One RFC 5424 message: facility authpriv, severity warning for failures and denials, info otherwise;
    MSGID the event type, `[meta sequenceId]` the event id, the event as JSON (UTF-8, with a BOM)."""
    severity = 4 if any(w in ev.action for w in ("failed", "denied", "rejected", "blocked")) else 6
    stamp = ev.created_at.isoformat().replace("+00:00", "Z")
    header = (f"<{FACILITY_AUTHPRIV * 8 + severity}>1 {stamp} {_ascii_field(hostname, 255)} bastion - "
              f"{_ascii_field(ev.action, 32)} [meta sequenceId=\"{_sd_escape(str(ev.id))}\"]")
    body = json.dumps(event_json(ev), separators=(",", ":"), default=str)
    return header.encode() + b" \xef\xbb\xbf" + body.encode()


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(message)).encode() + b" " + message


# ---- transports ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    kind: str
    url: str
    secret: bytes | None


Transport = Callable[[Target, list[AuditEvent], datetime], None]  # raises on failure


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


class NetworkTransport:
    """Sends for real: HTTPS POST, or a TCP/TLS connection carrying octet-counted RFC 5424 frames."""

    def __init__(self, ca_file: Path | None = None, hostname: str | None = None) -> None:
        self.tls = tls_context(ca_file)
        self.hostname = hostname or socket.gethostname()

    def __call__(self, target: Target, events: list[AuditEvent], now: datetime) -> None:
        if target.kind == "webhook":
            self._webhook(target, events, now)
        else:
            self._syslog(target, events)

    def _webhook(self, target: Target, events: list[AuditEvent], now: datetime) -> None:
        body = json.dumps({"events": [event_json(e) for e in events]}, separators=(",", ":"), default=str).encode()
        stamp = int(now.timestamp())
        headers = {"content-type": "application/json", TIMESTAMP_HEADER: str(stamp),
                   SIGNATURE_HEADER: sign(target.secret or b"", stamp, body), "user-agent": "Bastion-audit/1"}
        response = httpx.post(target.url, content=body, headers=headers, timeout=TIMEOUT, verify=self.tls,
                              follow_redirects=False)
        if not 200 <= response.status_code < 300:
            raise OSError(f"HTTP {response.status_code}")

    def _syslog(self, target: Target, events: list[AuditEvent]) -> None:
        parts = urlsplit(target.url)
        data = b"".join(frame(syslog_message(e, self.hostname)) for e in events)
        with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=TIMEOUT) as raw:
            if parts.scheme == "tls":
                with self.tls.wrap_socket(raw, server_hostname=parts.hostname) as sock:
                    sock.sendall(data)
            else:
                raw.sendall(data)
                raw.shutdown(socket.SHUT_WR)


# ---- the delivery pass --------------------------------------------------------------------------

def deliver_due(sessions: sessionmaker[Session], secret_key: bytes, now: datetime, transport: Transport,
                max_attempts: int) -> int:
    """One pass: for each sink, claim its due batch, send it, settle it. Returns the events delivered."""
    with transaction(sessions, readonly=True) as session:
        sinks = list(session.execute(select(AuditSink.id, AuditSink.kind, AuditSink.url, AuditSink.secret)
                                     .where(AuditSink.enabled.is_(True))).all())
    delivered = 0
    for sink_id, kind, url, sealed in sinks:
        try:
            secret = _box(secret_key).open(sealed, url).encode() if sealed else None
        except SealedValueError:
            secret = None
        delivered += _deliver_sink(sessions, Target(kind, url, secret), sink_id, now, transport, max_attempts,
                                   sealed is not None and secret is None)
    return delivered


def _deliver_sink(sessions: sessionmaker[Session], target: Target, sink_id: int, now: datetime,
                  transport: Transport, max_attempts: int, unreadable_secret: bool) -> int:
    with transaction(sessions) as session:  # claim: nobody else sends these until the lease ends
        rows = list(session.execute(select(AuditOutbox.id, AuditOutbox.event_id, AuditOutbox.attempts).where(
            AuditOutbox.sink_id == sink_id, AuditOutbox.state == "pending", AuditOutbox.next_attempt_at <= now)
            .order_by(AuditOutbox.id).limit(BATCH)).all())
        if not rows:
            return 0
        ids = [r.id for r in rows]
        session.execute(update(AuditOutbox).where(AuditOutbox.id.in_(ids)).values(next_attempt_at=now + LEASE))
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.id.in_([r.event_id for r in rows]))
                                      .order_by(AuditEvent.id)))
        for ev in events:
            session.expunge(ev)
    error: str | None = None
    if unreadable_secret:
        error = "the sink's secret does not open with this instance key"
    else:
        try:
            if events:
                transport(target, events, now)
        except (OSError, httpx.HTTPError, ssl.SSLError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
    with transaction(sessions) as session:
        if error is None:
            found = {e.id for e in events}
            session.execute(delete(AuditOutbox).where(AuditOutbox.id.in_(
                [r.id for r in rows if r.event_id in found])))
            gone = [r.id for r in rows if r.event_id not in found]
            if gone:  # removed by retention before it could be sent
                session.execute(update(AuditOutbox).where(AuditOutbox.id.in_(gone)).values(
                    state="dead", last_error="the event was removed before it was delivered"))
            return len(found)
        for r in rows:
            attempts = r.attempts + 1
            dead = attempts >= max_attempts
            session.execute(update(AuditOutbox).where(AuditOutbox.id == r.id).values(
                attempts=attempts, state="dead" if dead else "pending", last_error=error,
                next_attempt_at=now + backoff(attempts)))
    return 0

