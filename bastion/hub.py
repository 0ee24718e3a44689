"""The running instance's shared parts: settings, database sessions, blob store, git stores.

Built once by the app factory (or a CLI command) and passed to services explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bastion.config import Settings
from bastion.db import make_engine, make_session_factory, migrate
from bastion.storage import BlobStore, LocalBlobStore
from bastion.storage.gitstore import GitRepo
from bastion.storage.regions import DEFAULT_REGION, Region, load_regions
from bastion.storage.s3 import S3BlobStore


def object_store(settings: Settings, region: Region, namespace: str) -> BlobStore:
    return region_store(region, settings.resolved_data_dir, settings.tmp_dir, namespace)


def region_store(region: Region, data_dir: Path, tmp_dir: Path, namespace: str) -> BlobStore:
    """The region's store for one kind of object: "lfs", or Xet's "xet/xorbs", "xet/shards", ...
    (on local disk by default: the data dir's lfs/ and xet/ folders). Staging files are written in the
    data dir's tmp/ and installed by the store."""
    if region.s3 is not None:
        return S3BlobStore(region.s3, tmp_dir, namespace)
    return LocalBlobStore((region.local_path or data_dir) / namespace, tmp_dir)


@dataclass
class Hub:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    # Where every byte lives (bastion.storage.regions: BASTION_REGIONS / BASTION_REGIONS_FILE).
    region: Region = Region(DEFAULT_REGION)
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
        region = load_regions()[DEFAULT_REGION]
        (region.git_root or settings.repos_dir).mkdir(parents=True, exist_ok=True)
        return cls(settings, engine, make_session_factory(engine), object_store(settings, region, "lfs"),
                   region=region)

    @property
    def git_root(self) -> Path:
        return self.region.git_root or self.settings.repos_dir

    def object_store(self, namespace: str) -> BlobStore:
        return object_store(self.settings, self.region, namespace)

    def git_path(self, storage_key: str) -> Path:
        return self.git_root / storage_key[:2] / f"{storage_key}.git"

    def git(self, storage_key: str) -> GitRepo:
        return GitRepo(self.git_path(storage_key))

    def close(self) -> None:
        self.engine.dispose()
