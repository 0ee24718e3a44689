"""Benchmark: added cost of authentication + authorization on whoami-v2 and a resolve HEAD,
with 1k and then 50k tokens in the same database (10k users). Prints medians; asserts nothing.

Three views of the same cost:
- inside the real server, from its `Server-Timing` header (BASTION_SERVER_TIMING=1): the time spent
  turning the token into a Principal plus the time in `require()`, per request;
- over HTTP: the same request with a token minus without one (for a public file's resolve HEAD this is
  the same work; for whoami-v2 the anonymous request is a 401 that skips the route's own work, so that
  difference also holds building the identity payload);
- in-process without HTTP: authentication + one authorize() on a repo.

Run from the repository root: `.venv/bin/python -m bench.authz`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from bastion.tokens import format as token_format
from tests.conftest import BastionServer

USERS = 10_000


def bulk_tokens(url: str, start: int, count: int) -> str:
    """Insert `count` tokens spread over the users; returns one live secret among them."""
    engine = sa.create_engine(url)
    secret = ""
    rows = []
    for i in range(start, start + count):
        secret = token_format.generate()
        rows.append({"user_id": 1 + i % USERS, "name": f"t{i}", "role": "write",
                     "secret_hash": token_format.hash_token(secret), "last4": secret[-4:], "restrictions": "[]",
                     "created_at": "2026-01-01 00:00:00"})
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO access_tokens (user_id, name, role, secret_hash, last4, restrictions, "
                             "created_at) VALUES (:user_id, :name, :role, :secret_hash, :last4, :restrictions, "
                             ":created_at)"), rows)
    engine.dispose()
    return secret


def server_auth_ms(response: httpx.Response) -> float:
    """auth + authz from the server's Server-Timing header (0 when the request did neither)."""
    figures = dict(part.strip().split(";dur=") for part in response.headers.get("server-timing", "").split(",")
                   if ";dur=" in part)
    return float(figures.get("auth", 0)) + float(figures.get("authz", 0))


def medians_ms(client: httpx.Client, method: str, url: str, headers: dict[str, str],
               n: int = 400) -> tuple[float, float]:
    """(median round trip, median server-side auth + authz) over n requests."""
    for _ in range(20):
        client.request(method, url, headers=headers)
    samples, server = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.request(method, url, headers=headers)
        samples.append((time.perf_counter() - t0) * 1000)
        assert response.status_code in (200, 401), response.text
        server.append(server_auth_ms(response))
    return statistics.median(samples), statistics.median(server)


def in_process_ms(work: Path, secret: str, n: int = 500) -> float:
    """Authentication + principal + one authorize() on a repo, without HTTP: the policy's own cost."""
    from bastion.authz import Permission, authorize
    from bastion.config import Settings
    from bastion.db import transaction
    from bastion.hub import Hub
    from bastion.repos import service as repos
    from bastion.tokens import service as tokens

    hub = Hub.open(Settings(data_dir=work, scanners=[]), run_migrations=False)
    samples = []
    try:
        for i in range(n + 20):
            t0 = time.perf_counter()
            with transaction(hub.sessions, readonly=True) as s:
                principal = tokens.principal_for_token(tokens.authenticate(s, secret, "127.0.0.1", "bench",
                                                                           touch=False))
                ref = repos.repo_ref(repos.find_repo(s, "model", "bench", "pub"))
                assert authorize(principal, Permission.REPO_READ, ref)
            if i >= 20:
                samples.append((time.perf_counter() - t0) * 1000)
    finally:
        hub.close()
    return statistics.median(samples)


def main() -> None:
    base = Path("bench/_work").resolve()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="authz-", dir=base))
    server = BastionServer(work, env={"BASTION_STRICT_AUTHZ": "0", "BASTION_SCANNERS": "[]",
                                      "BASTION_SERVER_TIMING": "1"}).start()
    try:
        name, token = server.create_user("bench")
        httpx.post(f"{server.url}/api/repos/create", json={"name": "pub"}, headers={"authorization": f"Bearer {token}"})
        url = f"sqlite:///{work / 'bastion.sqlite3'}"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (name, name_lower, email, fullname, is_admin, is_active, "
                                 "created_at) VALUES (:n, :n, :e, :n, 0, 1, '2026-01-01 00:00:00')"),
                         [{"n": f"user{i}", "e": f"user{i}@example.com"} for i in range(2, USERS + 1)])
        engine.dispose()
        results = {}
        live = bulk_tokens(url, 0, 1_000)
        for label, extra in (("1k", 0), ("50k", 49_000)):
            if extra:
                live = bulk_tokens(url, 1_000, extra)
            with httpx.Client() as client:
                auth = {"authorization": f"Bearer {live}"}
                resolve = f"{server.url}/bench/pub/resolve/main/.gitattributes"
                whoami = f"{server.url}/api/whoami-v2"
                whoami_anon, whoami_anon_srv = medians_ms(client, "GET", whoami, {})
                whoami_tok, whoami_srv = medians_ms(client, "GET", whoami, auth)
                resolve_anon, resolve_anon_srv = medians_ms(client, "HEAD", resolve, {})
                resolve_tok, resolve_srv = medians_ms(client, "HEAD", resolve, auth)
                results[label] = {
                    "server: whoami auth+authz": whoami_srv,
                    "server: resolve HEAD auth+authz": resolve_srv,
                    "server: resolve HEAD anonymous": resolve_anon_srv,
                    "http: whoami anonymous (401)": whoami_anon,
                    "http: whoami with token": whoami_tok,
                    "http: resolve HEAD anonymous": resolve_anon,
                    "http: resolve HEAD with token": resolve_tok,
                    "in-process auth + authz": in_process_ms(work, live),
                }
    finally:
        server.stop()
    print(f"{'median ms':36} {'1k tokens':>10} {'50k tokens':>11}")
    for key in results["1k"]:
        print(f"{key:36} {results['1k'][key]:10.3f} {results['50k'][key]:11.3f}")
    for label in ("1k", "50k"):
        r = results[label]
        print(f"{label} tokens: inside the server, auth + authz takes {r['server: whoami auth+authz']:.3f} ms on "
              f"whoami-v2 and {r['server: resolve HEAD auth+authz']:.3f} ms on resolve HEAD   (goal < 1 ms)")
        print(f"{label} tokens: over HTTP, a token adds "
              f"{r['http: resolve HEAD with token'] - r['http: resolve HEAD anonymous']:+.3f} ms to resolve HEAD "
              f"(goal < 1 ms); whoami-v2 with a token vs its 401: "
              f"{r['http: whoami with token'] - r['http: whoami anonymous (401)']:+.3f} ms, payload included")
    growth = max(results["50k"][k] / results["1k"][k] for k in ("server: whoami auth+authz",
                                                                 "server: resolve HEAD auth+authz"))
    print(f"growth from 1k to 50k tokens (server-side auth + authz): x{growth:.2f}   (goal: flat)")


if __name__ == "__main__":
    sys.exit(main())
