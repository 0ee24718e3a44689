"""Benchmark: SCIM list and filter requests against one scope of 20,000 users, as an IdP's sync sends them.

Seeds an organization with USERS members its SCIM provisioned (accounts, memberships and SCIM identities with
an externalId and the IdP's profile, by a bulk core insert), starts `bastion serve`, and times through the org's
SCIM endpoint (and the instance's, which sees the same accounts and the owner):
- the reference: `GET /Users?count=100`, the first page of 100 without a filter;
- `userName eq "…"` (one match, what Okta and Entra send on every sync), `externalId eq`, `emails.value eq`
  (the IdP's addresses live in a JSON profile: no index), `userName sw` (half of them) at its 11th page of 100,
  and the last page of 100 without a filter (OFFSET at its deepest).
Prints medians in ms and each one's ratio to the reference measured in the same run. Asserts nothing timed
(only that each answer is right). SQLite always; PostgreSQL too when one answers at BASTION_TEST_PG_ADMIN
(default postgres@127.0.0.1:5432, as the tests), its tables analyzed after the load as autovacuum would.

Run from the repository root: `.venv/bin/python -m bench.scim_filters [USERS]`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL, BastionServer, create_pg_database, drop_pg_database
from tests.scim.conftest import make_org, scim_token

USERS = 20_000
PAGE = 100


def seed(server: BastionServer, org: str, users: int) -> None:
    """`users` accounts provisioned by the org's SCIM: member rows (managed_by scim) and identities."""
    from bastion.accounts.models import User
    from bastion.orgs.models import Organization, OrgMember
    from bastion.scim.models import ScimIdentity

    engine = server.engine()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            org_id = conn.execute(sa.select(Organization.id).where(Organization.name == org)).scalar_one()
            for lo in range(0, users, 5_000):
                batch = range(lo, min(users, lo + 5_000))
                conn.execute(sa.insert(User.__table__), [
                    {"name": f"user{i:05d}", "name_lower": f"user{i:05d}", "email": f"user{i:05d}@corp.example",
                     "fullname": f"User {i}", "is_admin": False, "is_active": True,
                     "created_at": t0 + timedelta(seconds=i)} for i in batch])
                ids = {name: pk for name, pk in conn.execute(sa.select(User.name, User.id).where(
                    User.name.in_([f"user{i:05d}" for i in batch])))}
                conn.execute(sa.insert(OrgMember.__table__), [
                    {"org_id": org_id, "user_id": ids[f"user{i:05d}"], "role": "read", "managed_by": "scim",
                     "created_at": t0 + timedelta(seconds=i)} for i in batch])
                conn.execute(sa.insert(ScimIdentity.__table__), [
                    {"scope": f"org:{org_id}", "org_id": org_id, "user_id": ids[f"user{i:05d}"],
                     "external_id": f"00u{i:08d}", "created_account": True,
                     "profile": {"name": {"givenName": "User", "familyName": str(i)}, "displayName": f"User {i}",
                                 "emails": [{"value": f"user{i:05d}@corp.example", "primary": True, "type": "work"}]},
                     "created_at": t0 + timedelta(seconds=i), "updated_at": t0 + timedelta(seconds=i)}
                    for i in batch])
        if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
            with engine.connect() as conn:
                conn.execute(sa.text("ANALYZE"))
                conn.commit()
    finally:
        engine.dispose()


def median_ms(client: httpx.Client, params: dict[str, Any], expect: int, total: int | None, n: int = 30) -> float:
    samples = []
    for i in range(n + 3):
        t0 = time.perf_counter()
        r = client.get("/Users", params=params)
        elapsed = (time.perf_counter() - t0) * 1000
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body.get("Resources", [])) == expect, (params, body.get("totalResults"))
        assert total is None or body["totalResults"] == total, (params, body["totalResults"])
        if i >= 3:
            samples.append(elapsed)
    return statistics.median(samples)


def measure(server: BastionServer, users: int) -> dict[str, dict[str, float]]:
    owner, _ = server.create_user("owner")
    org = make_org(server, owner, "benchorg")
    t0 = time.perf_counter()
    seed(server, org, users)
    print(f"  seeded {users} users in {time.perf_counter() - t0:.1f} s")
    out: dict[str, dict[str, float]] = {}
    for scope, base, args in (("org", f"/api/organizations/{org}/scim/v2", ("--org", org)),
                              ("instance", "/scim/v2", ("--instance",))):
        token = scim_token(server, *args)
        everyone = users + 1  # the owner: a member of the org, an account of the instance
        probe = f"user{users * 3 // 4:05d}"
        with httpx.Client(base_url=server.url + base, timeout=120,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            rows = {
                "reference: first page of 100, no filter": median_ms(c, {"count": PAGE}, PAGE, everyone),
                'userName eq "…" (1 match)': median_ms(c, {"filter": f'userName eq "{probe.upper()}"'}, 1, 1),
                'externalId eq "…" (1 match)': median_ms(
                    c, {"filter": f'externalId eq "00u{users * 3 // 4:08d}"'}, 1 if scope == "org" else 0,
                    1 if scope == "org" else 0),
                'emails.value eq "…" (1 match, JSON)': median_ms(
                    c, {"filter": f'emails.value eq "{probe}@corp.example"'}, 1, 1),
                'userName sw "user0", page at 1001': median_ms(
                    c, {"filter": 'userName sw "user0"', "startIndex": 1001, "count": PAGE}, PAGE, None),
                "last page of 100, no filter": median_ms(
                    c, {"startIndex": everyone - PAGE + 1, "count": PAGE}, PAGE, everyone),
            }
        out[scope] = rows
    return out


def report(backend: str, results: dict[str, dict[str, float]]) -> None:
    for scope, rows in results.items():
        ref = rows["reference: first page of 100, no filter"]
        print(f"{backend}, {scope} scope: {'median ms':>10} {'× reference':>12}")
        for label, ms in rows.items():
            print(f"  {label:40} {ms:10.1f} {ms / ref:12.2f}")


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else USERS
    base = Path("bench/_work").resolve()
    base.mkdir(parents=True, exist_ok=True)
    env = {"BASTION_SCANNERS": "[]"}
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect():
            pass
        engine.dispose()
        backends.append(("PostgreSQL", "pg"))
    except sa.exc.OperationalError:
        print(f"(no PostgreSQL at {PG_ADMIN_URL}: SQLite only)")
    for label, kind in backends:
        work = Path(tempfile.mkdtemp(prefix="scim-", dir=base))
        pg_name, url = create_pg_database(PG_ADMIN_URL) if kind else (None, None)
        server = BastionServer(work, database_url=url, env=env).start()
        try:
            print(f"{label}:")
            report(label, measure(server, users))
        finally:
            server.stop()
            if pg_name:
                drop_pg_database(PG_ADMIN_URL, pg_name)


if __name__ == "__main__":
    main()
