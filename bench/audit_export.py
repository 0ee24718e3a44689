"""Benchmark: download 1,000,000 audit events through the API of a running server, and its memory.

Seeds one organization's log with 1,000,000 events (a bulk core insert into SQLite: varied actions, authors,
tokens, addresses and details, one a second), starts `bastion serve` with a GeoIP database, and downloads the
whole million through `GET /api/organizations/{org}/audit-log/export` as the Hub's JSON array. The Hub caps
one download at the newest 100,000 events, so the million goes as ten downloads, one per `start`/`end` window
of 100,000 seconds. While they run, the server's resident memory (every process of it) is sampled every
20 ms. Prints the time, events per second, the idle RSS and the peak above it (goal: constant memory, under
100 MB above idle), then one download of the newest 100,000 alone, and the NDJSON rate.

Run from the repository root: `.venv/bin/python -m bench.audit_export [EVENTS]`.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from bastion.audit.models import AuditEvent
from tests.audit.conftest import build_geoip, create_people, start_audit_server
from tests.conftest import BastionServer

ACTIONS = ["repo.commit", "repo.create", "repo.update_settings", "org.change_role", "repo.lfs_object_store",
           "org.add_user", "repo.branch_create", "repo.access_request.accept"]
WINDOW = 100_000  # events (and seconds) per download


def seed(server: BastionServer, org: str, user_id: int, token_id: int, count: int, start: datetime) -> None:
    rnd = random.Random(18)
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    table = AuditEvent.__table__
    with engine.connect() as conn:
        top = conn.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0
    batch = 50_000
    for first in range(0, count, batch):
        rows = []
        for i in range(first, min(first + batch, count)):
            action = ACTIONS[i % len(ACTIONS)]
            rows.append({
                "id": top + 1 + i, "created_at": start + timedelta(seconds=i), "action": action,
                "actor_id": user_id, "actor_name": "bench-admin",
                "ip": rnd.choice(["81.2.69.160", "2a02:cf40:1:2::5", "89.160.20.112", "10.0.0.7"]),
                "user_agent": "huggingface_hub/1.0; python/3.11", "token_id": token_id, "request_id": f"{i:032x}",
                "via": "api", "target_type": "repo", "target_id": f"model/{org}/repo-{i % 977}", "namespace": org,
                "details": {"revision": "main", "files": i % 13, "summary": f"commit {i}"},
                "prev_hash": "", "hash": f"bench-{i:064d}"[-64:]})
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    engine.dispose()


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and every process below it (granian runs workers as children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.02)


def download(client: httpx.Client, org: str, params: dict[str, str]) -> int:
    """Stream one export; the number of records it held (counted without holding the body)."""
    records, tail = 0, b""
    with client.stream("GET", f"/api/organizations/{org}/audit-log/export", params=params) as r:
        assert r.status_code == 200, r.read()
        for chunk in r.iter_bytes():
            data = tail + chunk
            records += data.count(b'"createdAt":')  # once a record (its author has an _id too)
            tail = data[-11:]  # shorter than the marker: no occurrence is counted twice
    return records


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-audit-"))
    server = start_audit_server(work / "data", build_geoip(work / "city.mmdb"))
    try:
        (admin, token), = create_people(server, 1)
        client = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=600)
        org = "benchorg"
        assert client.post("/api/organizations", json={"name": org}).status_code == 201
        engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
        with engine.connect() as conn:
            user_id = conn.execute(sa.text("SELECT id FROM users WHERE name = :n"), {"n": admin}).scalar()
            token_id = conn.execute(sa.text("SELECT id FROM access_tokens WHERE user_id = :u"), {"u": user_id}).scalar()
        engine.dispose()
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)  # after the org exists
        t0 = time.perf_counter()
        seed(server, org, user_id, token_id, count, start)
        print(f"seeded {count:,} events in {time.perf_counter() - t0:.1f} s")
        assert server.proc is not None
        client.get(f"/api/organizations/{org}/audit-log", params={"limit": "10"})  # warm: first request's imports
        time.sleep(1)
        idle = tree_rss(server.proc.pid)
        sampler = PeakRss(server.proc.pid)
        sampler.start()
        t0 = time.perf_counter()
        total = 0
        for k in range(0, count, WINDOW):
            window = {"start": (start + timedelta(seconds=k)).isoformat(),
                      "end": (start + timedelta(seconds=k + WINDOW)).isoformat()}
            total += download(client, org, window)
        elapsed = time.perf_counter() - t0
        sampler.done.set()
        sampler.join()
        mib = 1024 * 1024
        print(f"JSON export of {total:,} events in {count // WINDOW} downloads: {elapsed:.1f} s, "
              f"{total / elapsed:,.0f} events/s")
        print(f"server RSS idle {idle / mib:.1f} MiB, peak {sampler.peak / mib:.1f} MiB, "
              f"peak above idle {(sampler.peak - idle) / mib:.1f} MiB (goal < 100 MiB)")
        t0 = time.perf_counter()
        newest = download(client, org, {})
        print(f"one download of the newest (the Hub's cap): {newest:,} events in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        lines = 0
        with client.stream("GET", f"/api/organizations/{org}/audit-log/export", params={"format": "ndjson"}) as r:
            for chunk in r.iter_bytes():
                lines += chunk.count(b"\n")
        elapsed = time.perf_counter() - t0
        print(f"NDJSON: {lines:,} events in {elapsed:.1f} s, {lines / elapsed:,.0f} events/s")
        client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
