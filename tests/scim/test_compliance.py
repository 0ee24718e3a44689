"""scim2-tester (the RFC 7643/7644 checker on PyPI) against the instance's and an org's SCIM endpoint of a
real server: every check it runs must pass."""

from __future__ import annotations

from collections import Counter

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.scim.conftest import ScimWorld

PASSING = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}


def run_checker(url: str, token: str) -> list:  # type: ignore[type-arg]
    client = SyncSCIMClient(httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30))
    return check_server(client)


@pytest.mark.parametrize("endpoint", ["instance", "org"])
def test_scim2_tester_passes_every_check(world: ScimWorld, endpoint: str) -> None:
    if endpoint == "instance":
        url, token = world.server.url + "/scim/v2", world.instance_token
    else:
        url, token = world.server.url + f"/api/organizations/{world.org}/scim/v2", world.org_token
    results = run_checker(url, token)
    counts = Counter(r.status.name for r in results)
    print(f"scim2-tester on the {endpoint} endpoint: {len(results)} checks, {dict(counts)}")
    for r in results:
        if r.status is Status.SKIPPED:
            print(f"  skipped: {r.title} ({r.resource_type}): {r.reason}")
    failed = [(r.title, r.resource_type, r.status.name, r.reason) for r in results if r.status not in PASSING]
    assert not failed, "\n".join(map(str, failed))
    assert len(results) > 20
