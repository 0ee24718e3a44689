"""`bastion audit verify` against the database, and the standalone verifier on an export plus signed
checkpoints and the published public key (no database, no audit key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.audit.context import AuditContext, bind_context
from bastion.config import Settings
from bastion.db import transaction
from bastion.hub import Hub
from bastion.signing import service as signing


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASTION_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "bastion.cli", "audit", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_verify_the_database_and_an_export_outside_bastion(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hub = Hub.open(Settings(data_dir=data, scanners=[]))
    signing.install(hub)
    with bind_context(AuditContext(actor_name="carol", via="api")):
        for i in range(12):
            with transaction(hub.sessions) as s:
                audit.record(s, AuditAction.TOKEN_CREATE, target=("token", str(i)), namespace="carol")
    public_key = signing.instance_key().public_key  # type: ignore[union-attr]
    hub.close()

    ok = _cli(data, "verify")
    assert ok.returncode == 0 and "12 events verified" in ok.stdout, ok.stderr
    assert _cli(data, "checkpoints", "--now", "--output", str(tmp_path / "cps.json")).returncode == 0
    assert _cli(data, "export-chain", "--output", str(tmp_path / "export.ndjson")).returncode == 0
    (tmp_path / "key.pub").write_text(public_key + "\n")
    outside = ["verify", "--export", str(tmp_path / "export.ndjson"), "--checkpoints", str(tmp_path / "cps.json"),
               "--public-key", str(tmp_path / "key.pub")]
    ok = _cli(tmp_path / "nowhere", *outside)
    assert ok.returncode == 0 and "12 events verified" in ok.stdout, ok.stdout + ok.stderr

    # An edited export: the hashes are public, so the edit is found without the key.
    lines = (tmp_path / "export.ndjson").read_text().splitlines()
    edited = json.loads(lines[6])
    edited["target_id"] = "99"
    (tmp_path / "export.ndjson").write_text("\n".join([*lines[:6], json.dumps(edited), *lines[7:]]) + "\n")
    bad = _cli(tmp_path / "nowhere", *outside)
    assert bad.returncode == 1 and "FAILED at event 7 (edited)" in bad.stdout
    # The same edit with every hash after it recomputed: the signed checkpoint no longer matches.
    from bastion.audit import chain

    records = [json.loads(line) for line in lines]
    records[6]["target_id"] = "99"
    prev = records[5]["hash"]
    for rec in records[6:]:
        rec["prev_hash"] = prev
        rec["hash"] = prev = chain.link_hash(rec)
    (tmp_path / "export.ndjson").write_text("".join(json.dumps(r) + "\n" for r in records))
    bad = _cli(tmp_path / "nowhere", *outside)
    assert bad.returncode == 1 and "FAILED at event 12 (checkpoint)" in bad.stdout
    # A truncated export ends before its last checkpoint.
    (tmp_path / "export.ndjson").write_text("\n".join(lines[:10]) + "\n")
    bad = _cli(tmp_path / "nowhere", *outside)
    assert bad.returncode == 1 and "FAILED at event 11 (deleted)" in bad.stdout
    # Checkpoints signed by another key are refused.
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                           capture_output=True, timeout=30)
    assert other.returncode == 0
    (tmp_path / "export.ndjson").write_text("\n".join(lines) + "\n")
    bad = _cli(tmp_path / "nowhere", *outside[:-1], str(tmp_path / "other.pub"))
    assert bad.returncode == 1 and "(checkpoint)" in bad.stdout

    # The database: a deleted row is named.
    engine = sa.create_engine(f"sqlite:///{data / 'bastion.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_events WHERE id = 5"))
    engine.dispose()
    bad = _cli(data, "verify")
    assert bad.returncode == 1 and "FAILED at event 5 (deleted)" in bad.stdout
