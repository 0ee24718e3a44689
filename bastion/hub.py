"""The running instance's shared parts: settings, database sessions, storage regions, git stores.

Built once by the app factory (or a CLI command) and passed to services explicitly.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import chain as audit_chain
from bastion.config import Settings
from bastion.db import make_engine, make_session_factory, migrate
from bastion.storage import BlobStore, LocalBlobStore
from bastion.storage.gitstore import GitRepo
from bastion.storage.regions import DEFAULT_REGION, Region, load_regions, region_of_key, storage_key_in


@dataclass(frozen=True)
class RegionPlaces:
    """A region's folders on this machine: its data base (local stores), git root and staging folder."""

    region: Region
    base: Path
    git_root: Path
    staging: Path


def region_places(settings: Settings, region: Region) -> RegionPlaces:
    if region.name == DEFAULT_REGION:
        base, git_root, staging = settings.resolved_data_dir, settings.repos_dir, settings.tmp_dir
    else:
        base = settings.resolved_data_dir / "regions" / region.name
        git_root, staging = base / "repos", base / "tmp"
    return RegionPlaces(region, region.local_path or base, region.git_root or git_root, region.staging_dir or staging)


def region_store(places: RegionPlaces, namespace: str) -> BlobStore:
    """The region's store for one kind of object: "lfs", or Xet's "xet/xorbs", "xet/shards", ...
    (on local disk by default: the region's lfs/ and xet/ folders). Staging files are written in the
    region's staging folder and installed by the store."""
    if places.region.s3 is not None:
        from bastion.storage.s3 import S3BlobStore  # boto3 is imported only where a region is on S3

        return S3BlobStore(places.region.s3, places.staging, namespace)
    return LocalBlobStore(places.base / namespace, places.staging)


@dataclass
class Hub:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # Storage regions by name (bastion.storage.regions: BASTION_REGIONS / BASTION_REGIONS_FILE).
    regions: dict[str, Region] = field(default_factory=lambda: {DEFAULT_REGION: Region(DEFAULT_REGION)})
    # Set by bastion.scanning.queue.attach(): where new scan jobs are handed to workers.
    scan_queue: Any = None
    # Set by the app factory and `bastion worker`: outgoing security e-mail (bastion.mail.Mailer).
    mailer: Any = None
    _stores: dict[tuple[str, str], BlobStore] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, run_migrations: bool = True) -> Hub:
        url = settings.resolved_database_url
        if run_migrations:
            migrate(url)
        engine = make_engine(url)
        audit_chain.install(engine, settings.resolved_audit_key_file)  # the chain's key, outside the database
        hub = cls(settings, engine, make_session_factory(engine), load_regions())
        hub.places(DEFAULT_REGION).git_root.mkdir(parents=True, exist_ok=True)
        return hub

    # ---- regions ---------------------------------------------------------------------------
    def places(self, region: str) -> RegionPlaces:
        try:
            return region_places(self.settings, self.regions[region])
        except KeyError:
            raise LookupError(f"storage region {region!r} is not configured on this instance") from None

    def object_store(self, namespace: str, region: str = DEFAULT_REGION) -> BlobStore:
        """One region's store for `namespace` ("lfs", "xet/xorbs", ...), made once per hub."""
        with self._lock:
            store = self._stores.get((region, namespace))
            if store is None:
                store = self._stores[(region, namespace)] = region_store(self.places(region), namespace)
            return store

    def blobs_in(self, region: str) -> BlobStore:
        """The LFS object store of a region."""
        return self.object_store("lfs", region)

    @property
    def blobs(self) -> BlobStore:
        """The default region's LFS object store."""
        return self.blobs_in(DEFAULT_REGION)

    def staging_dir(self, region: str) -> Path:
        """Where a region's temporary files go: upload staging, multipart parts, scan spool files."""
        return self.places(region).staging

    def new_storage_key(self, region: str) -> str:
        self.places(region)  # configured
        return storage_key_in(region, secrets.token_hex(16))

    # ---- git -----------------------------------------------------------------------------------
    def git_path(self, storage_key: str) -> Path:
        region = region_of_key(storage_key)
        key = storage_key.rpartition("/")[2]
        return self.places(region).git_root / key[:2] / f"{key}.git"

    def git(self, storage_key: str) -> GitRepo:
        return GitRepo(self.git_path(storage_key))

    def close(self) -> None:
        self.engine.dispose()
