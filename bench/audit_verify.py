"""Benchmark: `bastion audit verify` over 1,000,000 keyed events (SQLite), with a signed checkpoint every
1,000 events. Seeds by bulk insert with correct links and MACs (computed here with the data dir's audit
key), then times the real command in a subprocess and prints time, events per second and peak RSS.

Run from the repository root: `.venv/bin/python -m bench.audit_verify [EVENTS]`.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bastion.audit import chain, checkpoints
from bastion.config import Settings
from bastion.hub import Hub
from bastion.signing import service as signing

BATCH = 20_000
CHECKPOINT_EVERY = 1_000


def seed(data_dir: Path, total: int) -> float:
    hub = Hub.open(Settings(data_dir=data_dir, scanners=[]))
    signing.install(hub)
    ring = chain.Keyring.read(hub.settings.resolved_audit_key_file)
    key_id = ring.current
    signer = checkpoints.signer()
    start = time.perf_counter()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    prev = chain.GENESIS
    events: list[dict] = []
    cps: list[dict] = []
    insert_ev = sa.text(
        "INSERT INTO audit_events (id, created_at, action, actor_id, actor_name, ip, user_agent, token_id, request_id, "
        "via, target_type, target_id, namespace, details, prev_hash, hash, chain_version, key_id, mac) VALUES "
        "(:id, :created_at_db, :action, :actor_id, :actor_name, :ip, :user_agent, :token_id, NULL, :via, :target_type, "
        ":target_id, :namespace, :details_db, :prev_hash, :hash, 2, :key_id, :mac)")
    insert_cp = sa.text("INSERT INTO audit_checkpoints (last_event_id, last_hash, count, created_at, public_key, "
                        "signature) VALUES (:id, :hash, :count, :created_db, :pk, :sig)")
    with hub.engine.begin() as conn:
        for i in range(1, total + 1):
            created = t0 + timedelta(milliseconds=i)
            rec = {"id": i, "v": 2, "key_id": key_id, "created_at": created.isoformat(), "action": "repo.commit",
                   "actor_id": i % 5000, "actor_name": f"user{i % 5000}", "ip": f"10.0.{i % 250}.{i % 200}",
                   "user_agent": "huggingface_hub/0.30", "token_id": i % 9000, "via": "api", "target_type": "model",
                   "target_id": f"org{i % 50}/m{i % 1000}", "namespace": f"org{i % 50}",
                   "details": {"revision": "main", "n": i}, "prev_hash": prev}
            rec["hash"] = prev = chain.link_hash(rec)
            rec["mac"] = ring.mac(key_id, rec["hash"])
            rec["created_at_db"] = created.replace(tzinfo=None).isoformat(sep=" ")
            rec["details_db"] = json.dumps(rec["details"])
            events.append(rec)
            if i % CHECKPOINT_EVERY == 0:
                at = created.isoformat()
                cps.append({"id": i, "hash": prev, "count": i, "created_db": created.replace(tzinfo=None)
                            .isoformat(sep=" "), "pk": signer.public_key,
                            "sig": signer.sign(checkpoints.payload(i, prev, i, at))})
            if len(events) >= BATCH:
                conn.execute(insert_ev, events)
                events.clear()
        if events:
            conn.execute(insert_ev, events)
        if cps:
            conn.execute(insert_cp, cps)
    hub.close()
    return time.perf_counter() - start


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        data_dir = Path(tmp)
        seeded = seed(data_dir, total)
        print(f"seeded {total:,} events (+{total // CHECKPOINT_EVERY:,} signed checkpoints) in {seeded:.1f} s")
        env = {**os.environ, "BASTION_DATA_DIR": str(data_dir)}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bastion.cli", "audit", "verify"], env=env,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime
        print(proc.stdout.strip() or proc.stderr.strip())
        print(f"bastion audit verify: {elapsed:.1f} s wall ({total / elapsed:,.0f} events/s), {cpu:.1f} s CPU "
              f"({total / cpu:,.0f} events per CPU second; the machine is shared), peak RSS "
              f"{usage.ru_maxrss / 1024:.0f} MiB (exit {proc.returncode})")


if __name__ == "__main__":
    main()
