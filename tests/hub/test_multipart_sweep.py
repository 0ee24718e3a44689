"""Abandoned multipart uploads (their URLs expired) leave no staging file and no row behind."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from bastion.accounts import service as accounts
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.hub import Hub
from bastion.lfs.models import LfsMultipartUpload
from bastion.lfs.service import sweep_abandoned_multipart
from bastion.repos import service as repos


def test_abandoned_multipart_uploads_are_swept_live_ones_kept(tmp_path: Path) -> None:
    hub = Hub.open(Settings(data_dir=tmp_path, scanners=[], upload_url_ttl_seconds=3600))
    try:
        staging = hub.settings.tmp_dir / "multipart"
        staging.mkdir(parents=True, exist_ok=True)
        files = {name: staging / name for name in ("a" * 32, "b" * 32, "orphan")}
        for path in files.values():
            with path.open("wb") as fh:
                fh.truncate(1 << 30)  # sparse, as a multipart upload's staging file is
        three_hours_ago = time.time() - 3 * 3600
        for name in ("a" * 32, "orphan"):
            os.utime(files[name], (three_hours_ago, three_hours_ago))
        with transaction(hub.sessions) as s:
            user = accounts.create_user(s, "alice", "alice@example.com")
            repo = repos.create_repo(hub, s, user, repos.namespace_ref(s, "alice"), "m", "model", False)
            for name, age in (("a" * 32, timedelta(hours=3)), ("b" * 32, timedelta(minutes=5))):
                s.add(LfsMultipartUpload(id=name, repo_id=repo.id, oid="0" * 64, size=1 << 30, chunk_size=1 << 27,
                                         staging_path=str(files[name]), user_id=user.id, created_at=utcnow() - age))
        with transaction(hub.sessions) as s:
            assert sweep_abandoned_multipart(hub, s) == ["a" * 32]
        assert not files["a" * 32].exists() and not files["orphan"].exists()  # the orphan's repo was deleted
        assert files["b" * 32].exists()  # still within its URLs' lifetime
        with transaction(hub.sessions) as s:
            assert [u.id for u in s.query(LfsMultipartUpload)] == ["b" * 32]
    finally:
        hub.close()
