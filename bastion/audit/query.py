"""Reading the audit trail: the Hub's `q` search syntax and date range as SQL, the three logs people read
(an org's, the instance's, a user's own security log) as scopes, and keyset pages newest first.

`q` is the Hub's `key:value` syntax: `type:repo.create author:alice ip:203.0.113.7`. Terms of one key are
alternatives (OR), different keys must all hold (AND). `type:` takes an event name or a prefix ending
in `*` (`type:org.settings.*`); `author:` a user name; `ip:` an address or a network (`203.0.113.0/24`).
When the instance shows anonymised addresses (`BASTION_AUDIT_ANONYMIZE_IPS`) an address in `ip:` means
the network it is shown as (IPv4 /24, IPv6 /48). The date range is `start` / `end` (ISO-8601 date or
date-time, UTC when no offset is given; `end` as a bare date includes that whole day).

Pages are keyset pages over the event id (the insertion order), newest first: a page after cursor C
holds ids below C, so events written while someone pages never shift or repeat what they see.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, Select, and_, or_, select, true
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit.actions import AuditAction
from bastion.audit.models import AuditEvent
from bastion.db import transaction
from bastion.errors import BadRequest

T = TypeVar("T")

# The Hub hides the export event from the default view; asking for it by `type:` shows it.
HIDDEN_BY_DEFAULT = (str(AuditAction.ORG_AUDIT_LOG_EXPORT), str(AuditAction.INSTANCE_AUDIT_LOG_EXPORT))
# What a user's own security log holds: sign-ins, second factors, e-mails, keys, sessions, tokens.
SECURITY_LOG_PREFIXES = ("user.", "token.")
# The Hub's export holds at most the last 100,000 events.
EXPORT_LIMIT = 100_000
MAX_Q_TERMS = 20
_TERM = re.compile(r"^(type|author|ip):(\S+)\Z")
_TYPE = re.compile(r"^[a-zA-Z0-9_.]+\*?\Z")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,95}\Z")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AuditFilter:
    """A parsed search: each tuple empty means "any"."""

    types: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    ips: tuple[Network, ...] = ()
    start: datetime | None = None
    end: datetime | None = None  # exclusive

    @property
    def names_type(self) -> bool:
        return bool(self.types)


@dataclass(frozen=True)
class Scope:
    """Which log: `clause` selects its events; `label` names it in file names and messages."""

    label: str
    clause: ColumnElement[bool] = field(repr=False)


def anonymized_network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network:
    """The network an address is shown as when addresses are anonymised: IPv4 /24, IPv6 /48."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)


def anonymize_ip(value: str | None) -> str | None:
    """`203.0.113.7` → `203.0.113.0`, `2001:db8:1:2::5` → `2001:db8:1::`; what is no address stays as is."""
    if not value:
        return value
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return value
    return str(anonymized_network(ip).network_address)


def parse_q(q: str | None, *, anonymized: bool = False) -> tuple[tuple[str, ...], tuple[str, ...], tuple[Network, ...]]:
    types: list[str] = []
    authors: list[str] = []
    ips: list[Network] = []
    terms = (q or "").split()
    if len(terms) > MAX_Q_TERMS:
        raise BadRequest(f"'q' takes at most {MAX_Q_TERMS} terms")
    for term in terms:
        found = _TERM.match(term)
        if found is None:
            raise BadRequest(f"Invalid search term {term[:100]!r} in 'q': use type:EVENT, author:USER or ip:ADDRESS")
        key, value = found.groups()
        if key == "type":
            if not _TYPE.match(value) or len(value) > 64:
                raise BadRequest(f"Invalid event type {value[:100]!r} in 'q'")
            types.append(value)
        elif key == "author":
            if not _NAME.match(value):
                raise BadRequest(f"Invalid author {value[:100]!r} in 'q'")
            authors.append(value)
        else:
            ips.append(_parse_ip(value, anonymized))
    return tuple(types), tuple(authors), tuple(ips)


def _parse_ip(value: str, anonymized: bool) -> Network:
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
        else:
            ip = ipaddress.ip_address(value)
            net = anonymized_network(ip) if anonymized else ipaddress.ip_network(ip)
    except ValueError:
        raise BadRequest(f"Invalid IP address or network {value[:100]!r} in 'q'") from None
    step = 8 if net.version == 4 else 16
    if net.prefixlen % step:
        raise BadRequest(f"ip: networks are matched on whole {'octets' if step == 8 else 'groups'}: use a prefix "
                         f"length that is a multiple of {step}")
    return net


def parse_when(value: str | None, name: str, *, end: bool = False) -> datetime | None:
    """An ISO-8601 date or date-time as an aware UTC datetime; a bare date as `end` is the next midnight."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), tzinfo=UTC)
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"'{name}' must be an ISO-8601 date or date-time (e.g. 2026-01-31 or "
                         f"2026-01-31T12:00:00Z), not {value[:60]!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_filter(q: str | None, start: str | None = None, end: str | None = None, *,
                 anonymized: bool = False) -> AuditFilter:
    types, authors, ips = parse_q(q, anonymized=anonymized)
    since, until = parse_when(start, "start"), parse_when(end, "end", end=True)
    if since is not None and until is not None and until <= since:
        raise BadRequest("'end' must be after 'start'")
    return AuditFilter(types, authors, ips, since, until)


# ---- scopes: the three logs ----------------------------------------------------------------------

def org_scope(org_name: str, org_created_at: datetime) -> Scope:
    """Events recorded in the org's namespace since the org exists (an earlier holder of the name, a user or
    a deleted org, is never shown to this one's admins)."""
    return Scope(org_name, and_(AuditEvent.namespace == org_name, AuditEvent.created_at >= org_created_at))


def instance_scope() -> Scope:
    """The instance log: events named `instance.*` (storage GC and fsck, clamd, signature updates, the
    instance log's own exports) and events that belong to no user or organization (failed sign-ins for
    unknown accounts, credentials that matched no token)."""
    return Scope("instance", or_(AuditEvent.action.like("instance.%"), AuditEvent.namespace.is_(None)))


def user_scope(user_id: int, user_name: str, user_created_at: datetime) -> Scope:
    """A user's own security log: `user.*` and `token.*` events about the user (their namespace, or the
    user as target) or done by them, since the account exists."""
    about = or_(AuditEvent.namespace == user_name, AuditEvent.actor_id == user_id,
                and_(AuditEvent.target_type == "user", AuditEvent.target_id == user_name))
    kinds = or_(*(AuditEvent.action.like(f"{p}%") for p in SECURITY_LOG_PREFIXES))
    return Scope(user_name, and_(kinds, about, AuditEvent.created_at >= user_created_at))


# ---- filters as SQL ----------------------------------------------------------------------------

def _network_clause(net: Network) -> ColumnElement[bool]:
    if net.prefixlen == net.max_prefixlen:
        return AuditEvent.ip == str(net.network_address)
    if net.prefixlen == 0:
        return AuditEvent.ip.is_not(None)
    if net.version == 4:
        octets = str(net.network_address).split(".")[: net.prefixlen // 8]
        return AuditEvent.ip.like(".".join(octets) + ".%")
    return _ipv6_clause(net)


def ipv6_text_prefixes(net: Network) -> list[tuple[str, int | None, int | None]]:
    """How the canonical (RFC 5952) text of every address in the IPv6 network `net` (a whole number of
    groups) begins: (text prefix, fewest colons, most colons) per way `::` may fall on its first groups.
    Where the prefix holds `::`, where its zeros end depends on how many groups follow: the bounds on the
    text's colons pin that down (None: no bound)."""
    k = net.prefixlen // 16
    head = net.network_address.packed
    groups = [head[2 * i] << 8 | head[2 * i + 1] for i in range(k)]
    found: set[tuple[str, int | None, int | None]] = set()
    for shape in itertools.product((0, 1), repeat=8 - k):
        addr = ipaddress.IPv6Address(b"".join(g.to_bytes(2, "big") for g in [*groups, *shape]))
        found.add(_prefix_text(str(addr), k))
    plain = [p for p, lo, hi in found if lo is None and hi is None]
    # A shorter unbounded prefix covers a longer one: keep the shortest set that still says the same.
    return sorted(found, key=lambda t: (t[0], t[1] or 0, t[2] or 0)) if not plain else sorted(
        (t for t in found if not any(o != t[0] and t[0].startswith(o) for o in plain)),
        key=lambda t: (t[0], t[1] or 0, t[2] or 0))


def _colons(left: int, right: int) -> int:
    """Colons in a canonical text with `::` between `left` and `right` groups."""
    return max(left - 1, 0) + 2 + max(right - 1, 0) if left or right else 2


def _prefix_text(text: str, k: int) -> tuple[str, int | None, int | None]:
    if "::" not in text:
        return ":".join(text.split(":")[:k]) + ":", None, None
    left, right = text.split("::")
    left_groups = left.split(":") if left else []
    right_groups = right.split(":") if right else []
    run_end = 8 - len(right_groups)  # groups [len(left), run_end) are the compressed zeros
    if k <= len(left_groups):
        return ":".join(left_groups[:k]) + ":", None, None
    if k <= run_end:  # the zeros reach past group k: at most 8 - k groups follow them
        return left + "::", None, _colons(len(left_groups), 8 - k)
    # group k is after the zeros: exactly as many groups follow them as here
    n = _colons(len(left_groups), len(right_groups))
    return left + "::" + ":".join(right_groups[: k - run_end]) + ":", n, n


def _ipv6_clause(net: Network) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    for prefix, fewest, most in ipv6_text_prefixes(net):
        clause = AuditEvent.ip.like(prefix + "%")
        if fewest is not None:
            clause = and_(clause, AuditEvent.ip.like("%:" * fewest + "%"))
        if most is not None:
            clause = and_(clause, AuditEvent.ip.not_like("%:" * (most + 1) + "%"))
        parts.append(clause)
    return or_(*parts)


def filter_clause(f: AuditFilter) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if f.types:
        parts.append(or_(*(AuditEvent.action.like(t[:-1].replace("_", "\\_") + "%", escape="\\") if t.endswith("*")
                           else AuditEvent.action == t for t in f.types)))
    else:
        parts.append(AuditEvent.action.not_in(HIDDEN_BY_DEFAULT))
    if f.authors:
        parts.append(AuditEvent.actor_name.in_(f.authors))
    if f.ips:
        parts.append(or_(*(_network_clause(n) for n in f.ips)))
    if f.start is not None:
        parts.append(AuditEvent.created_at >= f.start)
    if f.end is not None:
        parts.append(AuditEvent.created_at < f.end)
    return and_(true(), *parts)


def events_query(scope: Scope, f: AuditFilter, *, before: int | None = None) -> Select[tuple[AuditEvent]]:
    stmt = select(AuditEvent).where(scope.clause, filter_clause(f))
    if before is not None:
        stmt = stmt.where(AuditEvent.id < before)
    return stmt.order_by(AuditEvent.id.desc())


@dataclass(frozen=True)
class Page:
    events: Sequence[AuditEvent]
    next_cursor: int | None  # the id to pass as `cursor` for the next (older) page


def page(session: Session, scope: Scope, f: AuditFilter, *, cursor: int | None, limit: int) -> Page:
    rows = session.scalars(events_query(scope, f, before=cursor).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more and rows else None)


def rows_query(scope: Scope, f: AuditFilter, *, before: int | None = None) -> Select[Any]:
    """events_query() as plain rows (no ORM objects: an export reads many)."""
    stmt = select(*AuditEvent.__table__.c).where(scope.clause, filter_clause(f))
    if before is not None:
        stmt = stmt.where(AuditEvent.id < before)
    return stmt.order_by(AuditEvent.id.desc())


def batches(session_factory: sessionmaker[Session], scope: Scope, f: AuditFilter,
            work: Callable[[Session, Sequence[Row[Any]]], T], *, limit: int = EXPORT_LIMIT,
            batch: int = 1000) -> Iterator[T]:
    """`work` done on the newest `limit` events of a log, `batch` at a time; each batch is read (and `work`
    done) in a short read-only transaction of its own, closed before its result is handed on: memory stays
    one batch whatever the log's size, and no transaction stays open while a client reads (a long reader
    would also keep SQLite's WAL from being checkpointed)."""
    cursor: int | None = None
    left = limit
    while left > 0:
        with transaction(session_factory, readonly=True) as session:
            rows = session.execute(rows_query(scope, f, before=cursor).limit(min(batch, left))).all()
            if not rows:
                return
            done = work(session, rows)
        yield done
        cursor = rows[-1].id
        left -= len(rows)
        if len(rows) < batch:
            return


__all__ = ["EXPORT_LIMIT", "AuditFilter", "Page", "Scope", "anonymize_ip", "batches", "events_query", "rows_query",
           "filter_clause", "instance_scope", "org_scope", "page", "parse_filter", "user_scope"]
