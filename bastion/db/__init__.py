"""Database: engine, sessions, the declarative Base and Alembic migrations.

SQLite (WAL) is the embedded default; PostgreSQL is used when BASTION_DATABASE_URL says so.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


log = logging.getLogger("bastion.db")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run during a write; foreign keys are off by default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # Take the write lock at BEGIN so two writers never deadlock upgrading read locks.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            readonly = bool(conn.get_execution_options().get("bastion_readonly"))
            if conn.info.get("bastion_query_only", False) != readonly:
                # A write in a read-only transaction fails ("attempt to write a readonly database").
                conn.exec_driver_sql(f"PRAGMA query_only = {int(readonly)}")
                conn.info["bastion_query_only"] = readonly
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session], *, readonly: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception.

    `readonly`: the work only reads. On SQLite the transaction then starts deferred instead of
    taking the write lock, so reads never queue behind (or block) writers. A write in it is refused
    by the database (SQLite's query_only, PostgreSQL's READ ONLY transaction): it is a bug.
    """
    session = factory()
    if readonly:
        conn = session.connection(execution_options={"bastion_readonly": True})
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    opened = time.monotonic()
    try:
        yield session
        session.commit()
        if not readonly and time.monotonic() - opened > SLOW_WRITE_SECONDS:
            _report_slow_write(time.monotonic() - opened, sys._getframe(2))
    except BaseException:
        on_rollback = session.info.pop("bastion_after_rollback", [])
        session.rollback()
        session.close()
        # Only now, with the failed transaction's locks released, may follow-up writes run.
        for callback in on_rollback:
            callback()
        raise
    finally:
        session.close()


# A writing transaction holds SQLite's one write lock for its whole life: every other writer waits (and
# fails after the 30 s busy timeout). One held this long is reported with where it was opened.
SLOW_WRITE_SECONDS = 5.0


def _report_slow_write(held: float, frame: FrameType | None) -> None:
    where = "".join(traceback.format_stack(frame, limit=6)) if frame is not None else "?"
    log.warning("a writing transaction was held %.1f s (other writers waited); opened at:\n%s", held, where)


MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema (creates it on first start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # "heads": feature packages add independent migration branches off the initial schema.
    command.upgrade(cfg, "heads")


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction has committed (never after a rollback).

    For work outside the database that must not see uncommitted rows: a queued job id handed
    to a worker before the row is visible would be lost.
    """
    callbacks: list[Callable[[], None]] = session.info.setdefault("bastion_after_commit", [])
    callbacks.append(callback)


def after_rollback(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` after `transaction()` rolled this session back, in its own transaction.

    For records that must outlive the act they describe (an audited rejection): written inside
    the failing transaction they would vanish with it, and SQLite allows one writer at a time.
    """
    session.info.setdefault("bastion_after_rollback", []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop("bastion_after_commit", []):
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop("bastion_after_commit", None)
