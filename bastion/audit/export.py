"""A log as a download: the Hub's JSON array of records, or NDJSON (one record a line), streamed.

Memory stays one batch of events whatever the log's size (bastion.audit.query.batches reads the newest
events in keyset batches, each in a short read-only transaction); the caller hands in how to look up
the current authors and tokens of a batch, so this module reads no other feature's tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit.geoip import Locator
from bastion.audit.query import EXPORT_LIMIT, AuditFilter, Scope, batches
from bastion.audit.records import AuthorFacts, RecordContext, TokenFacts, hub_record

FORMATS = ("json", "ndjson")
MEDIA_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson"}
# (session, actor ids, token ids) → the authors and tokens as they are now (missing: deleted).
Lookup = Callable[[Session, set[int], set[int]], tuple[Mapping[int, AuthorFacts], Mapping[int, TokenFacts]]]


def filename(label: str, fmt: str, now: datetime) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:96]
    return f"audit-logs-{safe}-{now.strftime('%Y%m%dT%H%M%SZ')}.{'json' if fmt == 'json' else 'ndjson'}"


def stream(sessions: sessionmaker[Session], scope: Scope, f: AuditFilter, fmt: str, lookup: Lookup, *,
           geoip_database: Path | None, anonymize: bool, limit: int = EXPORT_LIMIT,
           batch: int = 1000) -> Iterator[bytes]:
    """The newest `limit` events of `scope` matching `f`, newest first, as bytes chunks of `fmt`."""
    locator = Locator(geoip_database)

    def serialise(session: Session, events: Sequence[Row[Any]]) -> list[str]:
        authors, tokens = lookup(session, {e.actor_id for e in events if e.actor_id is not None},
                                 {e.token_id for e in events if e.token_id is not None})
        ctx = RecordContext(authors, tokens, locator, anonymize)
        return [_dumps(hub_record(e, ctx)) for e in events]

    first = True
    if fmt == "json":
        yield b"["
    for lines in batches(sessions, scope, f, serialise, limit=limit, batch=batch):
        if fmt == "json":
            yield ((b"" if first else b",\n") + ",\n".join(lines).encode())
        else:
            yield ("\n".join(lines) + "\n").encode()
        first = False
    if fmt == "json":
        yield b"]\n"


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
