"""The verdict generation: what caches of verdict-derived summaries are keyed by.

Every transaction that writes scan_jobs, scan_results or secret_notices -- through the ORM (a flush) or
an ORM-enabled INSERT/UPDATE/DELETE statement -- bumps the one counter in scan_generation as it commits,
in the same transaction: whoever reads generation G also sees every change committed with it, in this
process or any other sharing the database (the server, `bastion worker`s). A summary computed after
reading G and cached under G is therefore never older than G; any later change makes the generation
differ, and the cached entry is not used again.

The counter is written only in the commit itself (not when the change is made), so its row lock is
held for the commit, never for the life of a long transaction: scan workers do not queue behind a push.
A Core statement run on the session's connection is not seen by those events: its writer calls
`changed(session)` (enqueue_blobs does).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from bastion.scanning.models import ScanGeneration

WATCHED = frozenset({"scan_jobs", "scan_results", "secret_notices"})
_CHANGED = "bastion_scan_generation_changed"


def current(session: Session) -> int | None:
    """The generation as of this transaction's view; None if the counter row is missing (then nothing
    may be cached: a counter that cannot be bumped proves nothing)."""
    value = session.scalar(select(ScanGeneration.generation).where(ScanGeneration.id == 1))
    return int(value) if value is not None else None


def changed(session: Session) -> None:
    """For a Core statement (`session.connection().execute(...)`) that writes a watched table: the ORM's
    events do not see those, so the writer says so."""
    session.info[_CHANGED] = True


def _watched(objects: Any) -> bool:
    return any(getattr(obj, "__tablename__", None) in WATCHED for obj in objects)


@event.listens_for(Session, "before_flush")
def _note_flush(session: Session, _context: Any, _instances: Any) -> None:
    if not session.info.get(_CHANGED) and (
            _watched(session.new) or _watched(session.dirty) or _watched(session.deleted)):
        session.info[_CHANGED] = True


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if (state.is_insert or state.is_update or state.is_delete) and any(
            mapper.local_table.name in WATCHED for mapper in state.all_mappers):
        state.session.info[_CHANGED] = True


@event.listens_for(Session, "before_commit")
def _bump(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT released: the outer commit bumps
    if session.new or session.dirty or session.deleted:
        session.flush()  # the commit would flush next: see now whether it writes watched rows
    if session.info.pop(_CHANGED, False):
        session.connection().execute(update(ScanGeneration.__table__).where(ScanGeneration.__table__.c.id == 1)
                                     .values(generation=ScanGeneration.__table__.c.generation + 1))


@event.listens_for(Session, "after_transaction_create")
def _fresh(session: Session, transaction: SessionTransaction) -> None:
    # A new outermost transaction starts with nothing to bump (a rolled-back one's writes are gone).
    # Not on rollback: a SAVEPOINT rolled back fires that too, and the outer transaction's own writes
    # must still bump (a savepoint's undone writes bump needlessly, which is harmless).
    if transaction.parent is None:
        session.info.pop(_CHANGED, None)
