"""The logs as their readers get them: which events a log holds, a page of it, its download, and the
audit event that every download leaves (`org.audit_log.export`, `instance.audit_log.export`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bastion import audit
from bastion.accounts import service as accounts
from bastion.audit import export, query
from bastion.audit.actions import AuditAction
from bastion.audit.geoip import Locator
from bastion.audit.query import AuditFilter, Scope
from bastion.audit.records import AuthorFacts, RecordContext, TokenFacts, hub_record
from bastion.config import Settings
from bastion.errors import AuthenticationRequired, BadRequest
from bastion.tokens import service as tokens


def lookup(session: Session, actor_ids: set[int],
           token_ids: set[int]) -> tuple[Mapping[int, AuthorFacts], Mapping[int, TokenFacts]]:
    """The authors and tokens of a batch of events as they are now; one query each."""
    users = accounts.users_by_ids(session, actor_ids)
    authors = {i: AuthorFacts(u.name, u.deleted_at is not None) for i, u in users.items()}
    toks = {i: TokenFacts(t.role, t.last4) for i, t in tokens.tokens_by_ids(session, token_ids).items()}
    return authors, toks


def org_scope(org_name: str, created_at: Any) -> Scope:
    return query.org_scope(org_name, created_at)


def own_scope(session: Session, user_id: int | None) -> Scope:
    user = accounts.user_by_id(session, user_id)
    if user is None:
        raise AuthenticationRequired("Sign in to see your security log.")
    return query.user_scope(user.id, user.name, user.created_at)


def parse_filter(settings: Settings, params: Mapping[str, str]) -> AuditFilter:
    return query.parse_filter(params.get("q"), params.get("start"), params.get("end"),
                              anonymized=settings.audit_anonymize_ips)


def parse_format(value: str | None) -> str:
    fmt = value or "json"
    if fmt not in export.FORMATS:
        raise BadRequest(f"'format' must be one of {', '.join(export.FORMATS)}")
    return fmt


@dataclass(frozen=True)
class LogPage:
    records: list[dict[str, Any]]
    next_cursor: int | None


def page(session: Session, settings: Settings, scope: Scope, f: AuditFilter, *, cursor: int | None,
         limit: int) -> LogPage:
    found = query.page(session, scope, f, cursor=cursor, limit=limit)
    authors, toks = lookup(session, {e.actor_id for e in found.events if e.actor_id is not None},
                           {e.token_id for e in found.events if e.token_id is not None})
    ctx = RecordContext(authors, toks, Locator(settings.geoip_database), settings.audit_anonymize_ips)
    return LogPage([hub_record(e, ctx) for e in found.events], found.next_cursor)


def record_export(session: Session, fmt: str, params: Mapping[str, str], *,
                  org: str | None) -> None:
    """Every download is itself audited, in the log it downloads."""
    details = {"format": fmt, **{k: params[k][:300] for k in ("q", "start", "end") if params.get(k)}}
    if org is not None:
        audit.record(session, AuditAction.ORG_AUDIT_LOG_EXPORT, target=("org", org), namespace=org, details=details)
    else:
        audit.record(session, AuditAction.INSTANCE_AUDIT_LOG_EXPORT, target=("instance", "audit_log"),
                     details=details)


def stream(sessions: sessionmaker[Session], settings: Settings, scope: Scope, f: AuditFilter, fmt: str, *,
           limit: int = query.EXPORT_LIMIT) -> Iterator[bytes]:
    return export.stream(sessions, scope, f, fmt, lookup, geoip_database=settings.geoip_database,
                         anonymize=settings.audit_anonymize_ips, limit=limit)
