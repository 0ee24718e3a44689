"""The running instance's shared parts: settings, database sessions, blob store, git stores.

Built once by the app factory (or a CLI command) and passed to services explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import chain as audit_chain
from bastion.config import Settings
from bastion.db import make_engine, make_session_factory, migrate
from bastion.storage import LocalBlobStore
from bastion.storage.gitstore import GitRepo


@dataclass
class Hub:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: LocalBlobStore
    # Set by bastion.scanning.queue.attach(): where new scan jobs are handed to workers.
    scan_queue: Any = None
    # Set by the app factory and `bastion worker`: outgoing security e-mail (bastion.mail.Mailer).
    mailer: Any = None

    @classmethod
    def open(cls, settings: Settings, *, run_migrations: bool = True) -> Hub:
        url = settings.resolved_database_url
        if run_migrations:
            migrate(url)
        engine = make_engine(url)
        audit_chain.install(engine, settings.resolved_audit_key_file)  # the chain's key, outside the database
        settings.repos_dir.mkdir(parents=True, exist_ok=True)
        blobs = LocalBlobStore(settings.lfs_dir, settings.tmp_dir)
        return cls(settings, engine, make_session_factory(engine), blobs)

    def git_path(self, storage_key: str) -> Path:
        return self.settings.repos_dir / storage_key[:2] / f"{storage_key}.git"

    def git(self, storage_key: str) -> GitRepo:
        return GitRepo(self.git_path(storage_key))

    def close(self) -> None:
        self.engine.dispose()
