"""Benchmark: what binding Xet CAS tokens to their credential costs per CAS request. Prints medians;
asserts nothing.

Every CAS request (reconstruction, xorb HEAD, dedupe, uploads) and every signed xorb fetch now reads
the access token the CAS token was obtained with (one primary-key lookup, with its user) and the repo
with its org facts, and decides REPO_READ / REPO_WRITE for that holder again. The real server reports,
in its `Server-Timing` header (BASTION_SERVER_TIMING=1), that re-establishing as `auth` -- the cost
added by the binding, which was 0 before -- and the policy decision as `authz`. Measured for a repo
of a user and for a private repo of an organization (whose facts take more reads), next to the
request's round trip, and next to what any hub API request pays to authenticate its token and decide
(whoami-v2, the org repo's model info): the reference, measured in the same run.

Run from the repository root: `.venv/bin/python -m bench.xet_cas_auth`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bastion.xet.hashing import hash_to_hex
from bastion.xet.packing import pack_file
from bastion.xet.shard import serialize_shard
from tests.conftest import BastionServer, hf_api
from tests.xet.hfclient import model_like

N = 400


def timings(response: httpx.Response) -> dict[str, float]:
    return {name: float(ms) for name, ms in (part.strip().split(";dur=") for part in
                                            response.headers.get("server-timing", "").split(",") if ";dur=" in part)}


def measure(client: httpx.Client, method: str, url: str, headers: dict[str, str]) -> tuple[float, float, float]:
    """(median round trip, median server-side auth, median server-side authz) in ms."""
    for _ in range(20):
        client.request(method, url, headers=headers)
    trips, auth, authz = [], [], []
    for _ in range(N):
        t0 = time.perf_counter()
        r = client.request(method, url, headers=headers)
        trips.append((time.perf_counter() - t0) * 1000)
        assert r.status_code in (200, 206), (r.status_code, r.text)
        figures = timings(r)
        auth.append(figures.get("auth", 0.0))
        authz.append(figures.get("authz", 0.0))
    return statistics.median(trips), statistics.median(auth), statistics.median(authz)


def cas_routes(server: BastionServer, token: str, repo_id: str, seed: int) -> dict[str, tuple[str, str, dict]]:
    """Store one small file through the CAS of `repo_id`; the read routes to time, with their headers."""
    def cas_token(kind: str) -> dict:
        r = httpx.get(f"{server.url}/api/models/{repo_id}/xet-{kind}-token/main",
                      headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        return r.json()

    write = cas_token("write")
    auth = {"Authorization": f"Bearer {write['accessToken']}"}
    packed = pack_file([model_like(seed, 300_000)])
    for body, xorb in packed.xorbs:
        httpx.post(f"{write['casUrl']}/v1/xorbs/default/{xorb.hex}", content=body, headers=auth).raise_for_status()
    httpx.post(f"{write['casUrl']}/v1/shards", headers=auth,
               content=serialize_shard([packed.file], packed.xorb_entries, with_footer=False)).raise_for_status()
    read = cas_token("read")
    auth = {"Authorization": f"Bearer {read['accessToken']}"}
    file_id, xorb_hex = hash_to_hex(packed.file.file_hash), packed.xorbs[0][1].hex
    plan = httpx.get(f"{read['casUrl']}/v2/reconstructions/{file_id}", headers=auth).json()
    fetch = plan["xorbs"][plan["terms"][0]["hash"]][0]
    rng = fetch["ranges"][0]["bytes"]
    return {
        "reconstruction v2": ("GET", f"{read['casUrl']}/v2/reconstructions/{file_id}", auth),
        "xorb HEAD": ("HEAD", f"{read['casUrl']}/v1/xorbs/default/{xorb_hex}", auth),
        "xorb fetch (300 kB range)": ("GET", fetch["url"], {"Range": f"bytes={rng['start']}-{rng['end']}"}),
    }


def main() -> None:
    base = Path("bench/_work").resolve()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xet-cas-auth-", dir=base))
    server = BastionServer(work, env={"BASTION_STRICT_AUTHZ": "0", "BASTION_SCANNERS": "[]",
                                      "BASTION_SERVER_TIMING": "1"}).start()
    rows: list[tuple[str, str, tuple[float, float, float]]] = []
    try:
        owner, token = server.create_user("bench")
        hf_api(server, token).create_repo(f"{owner}/own", private=True)
        server.cli("admin", "create-org", "acme", "--owner", owner)
        for i in range(3):  # an org with members besides its owner
            member, _ = server.create_user(f"member{i}", role="read")
            server.cli("admin", "add-member", "acme", member, "--role", "read")
        hf_api(server, token).create_repo("acme/weights", private=True)
        with httpx.Client(timeout=30) as client:
            hub_auth = {"Authorization": f"Bearer {token}"}
            # The reference: what every hub API request pays to authenticate its token and decide.
            for label, url in (("hub API", "/api/whoami-v2"), ("hub API (org repo)", "/api/models/acme/weights")):
                rows.append((label, "GET " + url.split("/")[-1], measure(client, "GET", server.url + url, hub_auth)))
            for label, repo_id, seed in (("user repo", f"{owner}/own", 1), ("org repo", "acme/weights", 2)):
                for route, (method, url, headers) in cas_routes(server, token, repo_id, seed).items():
                    rows.append((label, route, measure(client, method, url, headers)))
    finally:
        server.stop()
    print(f"{'median ms over ' + str(N) + ' requests':44} {'round trip':>10} {'auth':>8} {'authz':>8}")
    for label, route, (trip, auth, authz) in rows:
        print(f"{label + ': ' + route:44} {trip:10.3f} {auth:8.3f} {authz:8.3f}")
    cas = [auth for label, _, (_, auth, _) in rows if not label.startswith("hub")]
    hub = [auth + authz for label, _, (_, auth, authz) in rows if label.startswith("hub")]
    print(f"added per CAS request by the binding (auth: the credential and the repo read again): "
          f"{min(cas):.3f} to {max(cas):.3f} ms; a hub API request's own auth + authz here: "
          f"{min(hub):.3f} to {max(hub):.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
